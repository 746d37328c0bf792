//! Records the git commit evalq is built from (`EVALQ_GIT_COMMIT`, read by
//! `evalq::bench::machine::git_commit`), so every result file says which code produced it.
//!
//! Outside a git checkout (a source tarball) or without git, the commit is "unknown". The script
//! reruns when HEAD moves: on `.git/HEAD` (a checkout or detached HEAD), on the branch ref it points
//! to (a commit), and on `packed-refs` (where the ref lives after `git gc`).

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let commit = git(&manifest_dir, &["rev-parse", "--short=12", "HEAD"])
        .filter(|c| !c.is_empty() && c.chars().all(|ch| ch.is_ascii_hexdigit()))
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=EVALQ_GIT_COMMIT={commit}");

    // Without a git directory there is nothing to watch; `build.rs` alone keeps cargo from
    // rerunning the script on every change to the package.
    let Some(git_dir) = git(&manifest_dir, &["rev-parse", "--absolute-git-dir"]).map(PathBuf::from) else { return };
    // In a linked worktree, branch refs and packed-refs live in the common directory.
    let common_dir = git(&manifest_dir, &["rev-parse", "--git-common-dir"])
        .map(|d| if Path::new(&d).is_absolute() { PathBuf::from(d) } else { manifest_dir.join(d) })
        .unwrap_or_else(|| git_dir.clone());
    let head = git_dir.join("HEAD");
    watch(&head);
    if let Some(reference) =
        std::fs::read_to_string(&head).ok().and_then(|h| h.strip_prefix("ref:").map(|r| r.trim().to_string()))
    {
        watch(&git_dir.join(&reference));
        if common_dir != git_dir {
            watch(&common_dir.join(&reference));
        }
    }
    watch(&common_dir.join("packed-refs"));
}

/// Tells cargo to rerun on `path` if it exists (a missing path would make cargo rerun always).
fn watch(path: &Path) {
    if path.exists() {
        println!("cargo:rerun-if-changed={}", path.display());
    }
}

/// The trimmed stdout of a successful `git` command run in `dir`, or `None`.
fn git(dir: &Path, args: &[&str]) -> Option<String> {
    let out = Command::new("git").arg("-C").arg(dir).args(args).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}
