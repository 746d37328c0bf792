//! The tokenizer: llama.cpp's vocabularies rebuilt on the Hugging Face `tokenizers` crate.
//!
//! A GGUF file describes its tokenizer with llama.cpp's `tokenizer.ggml.*` keys: the vocabulary
//! (`tokens`, id = index), the token types, the BPE merges, and a pre-tokenizer name (`pre`) that
//! llama.cpp maps to a fixed list of regular expressions in `src/llama-vocab.cpp`. We rebuild the
//! same pipeline from `tokenizers` parts, so that `encode` returns exactly the ids that
//! `llama-tokenize`/`llama-perplexity` compute:
//!
//! ```text
//! text ─► added tokens (user-defined only) ─► Split(regex 1) ─► … ─► Split(regex n)
//!      ─► ByteLevel (bytes → GPT-2 chars, no regex of its own) ─► BPE (ranked merges)
//! ```
//!
//! How llama.cpp applies the regexes (`src/unicode.cpp`, `unicode_regex_split`), and why a
//! `Split` per regex with the "Isolated" behaviour is the same thing:
//!
//! - The regexes run in sequence. Each one splits every piece left by the previous one, and text
//!   between matches is kept as a piece of its own. That is `Split(…, Isolated)` chained in a
//!   `Sequence`, which also never lets a match cross a piece boundary.
//! - The common regexes (GPT-2's, Llama 3's, Qwen 2's) are not run through a regex engine at all:
//!   llama.cpp has hand-written matchers for them. We checked these against the regexes
//!   themselves. GPT-2's regex lacks a final `|\s+`, while the hand-written matcher behaves as if
//!   it had one. The pieces come out the same: the only whitespace the regex cannot match is a
//!   single character right before a non-space, which Split keeps as its own piece anyway. The
//!   matchers treat `\s+(?!\S)` with ordinary backtracking semantics: in a run of n spaces
//!   followed by a word, n−1 form one piece and the last one joins the word.
//! - The other regexes go through `std::regex` on a "collapsed" copy of the text. Each non-ASCII
//!   code point is replaced by one byte standing for its Unicode category, and `\p{L}`, `\p{N}`,
//!   `\p{P}`… become classes of those bytes. Non-ASCII whitespace becomes `\v`. The effect is the
//!   same as Unicode-aware `\p{..}` and `\s`, which is what `fancy-regex` gives us.
//! - Character classes come from llama.cpp's own Unicode tables and ours from the `regex` crate.
//!   Both come from the Unicode database but can differ on code points assigned only recently.
//!
//! Text is encoded with llama.cpp's `parse_special = false`: control and unknown tokens (for
//! example `<|im_start|>`) are tokenized as plain text, while user-defined tokens are still
//! matched first, as llama.cpp does. In `tokenizers` terms, control tokens are special added
//! tokens with `encode_special_tokens` switched on.
//!
//! SentencePiece vocabularies (`tokenizer.ggml.model = "llama"`) are not supported yet. Asking for
//! one gives a clear error.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::processors::template::{SpecialToken, Template, TemplateProcessing};
use tokenizers::{AddedToken, SplitDelimiterBehavior};

use crate::error::{Error, Result};
use crate::gguf::{GgufFile, Value};

const KEY_MODEL: &str = "tokenizer.ggml.model";
const KEY_PRE: &str = "tokenizer.ggml.pre";
const KEY_TOKENS: &str = "tokenizer.ggml.tokens";
const KEY_TOKEN_TYPE: &str = "tokenizer.ggml.token_type";
const KEY_MERGES: &str = "tokenizer.ggml.merges";
const KEY_BOS_ID: &str = "tokenizer.ggml.bos_token_id";
const KEY_EOS_ID: &str = "tokenizer.ggml.eos_token_id";
const KEY_ADD_BOS: &str = "tokenizer.ggml.add_bos_token";

/// llama.cpp's token types (`enum llama_token_type`), as stored in `tokenizer.ggml.token_type`.
const TOKEN_TYPE_UNKNOWN: i64 = 2;
const TOKEN_TYPE_CONTROL: i64 = 3;
const TOKEN_TYPE_USER_DEFINED: i64 = 4;

/// llama.cpp's default BOS and EOS id for BPE vocabularies. It applies when the file names none.
const BPE_DEFAULT_SPECIAL_ID: u32 = 11;

// The regexes below are llama.cpp's, verbatim (as Rust raw strings), so a reader can find them in
// `llm_tokenizer_bpe`'s constructor.

/// GPT-2's regex. llama.cpp runs it through a hand-written matcher; see the module docs for why
/// the pieces are the same.
const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)";
/// Llama 3's regex, with llama.cpp's case-insensitive contractions spelled out as character
/// classes (`(?i:'s)` would also match the long s `ſ` in a Unicode-aware engine).
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen 2's regex: Llama 3's with single digits.
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Tekken's regex: Llama 3's with unbounded digit runs.
const RE_TEKKEN: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}+| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const RE_PUNCT_RUNS: &str = r"[\p{P}\$\+<=>\^~\|]+";
const RE_BLOOM: &str = r" ?[^(\s|.,!?…。，、।۔،)]+";

/// The regexes for which a cut made by [`piece_starts`] is a split they make anyway. At a cut,
/// `\n` is followed by a space and then an ASCII letter `c`:
/// - no match spans it: the only alternatives that take `\n` take whitespace only and stop
///   before the space that precedes `c` (`\s+(?!\S)`, `\s*[\r\n]+`, `[\r\n]*` after
///   punctuation), and `\s+` is only tried where `\s+(?!\S)` failed, which is not the case
///   anywhere in a run that is followed by a space;
/// - the match that ends at the cut is the same when the text ends there (`(?!\S)` holds at the
///   end as it did before the space), and matching restarts at the cut in both cases;
/// - a letter starts a piece with the space in front of it (`' ?\p{L}+'`,
///   `[^\r\n\p{L}\p{N}]?\p{L}+`) and is never cut out by a regex that runs before
///   (`\p{N}` isolates digits: with a digit for `c`, the space would end the whitespace piece
///   instead, `"\n "` and `"7"`, which the test below caught).
///
/// The golden test on the whole WikiText-2 test file checks the result for the default model.
const CUT_SAFE_REGEXES: &[&str] = &[RE_GPT2, RE_LLAMA3, RE_QWEN2, RE_TEKKEN, r"\p{N}"];

/// Bytes of text per piece encoded in parallel (WikiText-2's test file, 1.3 MB, gives 20).
const PARALLEL_PIECE_BYTES: usize = 64 * 1024;

/// Where [`Tokenizer::encode`] cuts `text` into pieces of at least `min_bytes` (the first is at
/// 0): each cut `p` has `text[p - 1] == '\n'`, `text[p] == ' '` and an ASCII letter at `p + 1`
/// (a WikiText line break, `"\n \n The"`). A text without such places is one piece.
fn piece_starts(text: &str, min_bytes: usize) -> Vec<usize> {
    let bytes = text.as_bytes();
    let mut starts = vec![0];
    let mut from = min_bytes;
    while from < bytes.len() {
        let Some(off) = memchr_newline_space(&bytes[from..]) else { break };
        let p = from + off + 1;
        // `p` follows an ASCII newline, so it is a character boundary.
        match text[p + 1..].chars().next() {
            Some(c) if c.is_ascii_alphabetic() => {
                starts.push(p);
                from = p + min_bytes;
            }
            _ => from = p,
        }
    }
    starts
}

/// The offset of the first `"\n "` in `bytes`.
fn memchr_newline_space(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\n ")
}

/// One pre-tokenizer family: the `tokenizer.ggml.pre` names llama.cpp maps to it, its regex
/// list, and the vocabulary flags llama.cpp sets along with it.
struct PreFamily {
    names: &'static [&'static str],
    regexes: &'static [&'static str],
    /// A word that is already a token is emitted whole, without running the merges.
    ignore_merges: bool,
    /// The default for `add_bos` when `tokenizer.ggml.add_bos_token` is absent.
    add_bos: bool,
    /// llama.cpp clears the default BOS id for this family (ChatGLM).
    no_default_bos: bool,
}

const fn family(names: &'static [&'static str], regexes: &'static [&'static str]) -> PreFamily {
    PreFamily { names, regexes, ignore_merges: false, add_bos: false, no_default_bos: false }
}

/// The supported `tokenizer.ggml.pre` values, grouped as in llama.cpp's `llama_vocab::impl::load`.
const PRE_FAMILIES: &[PreFamily] = &[
    family(&["default"], &[RE_PUNCT_RUNS, RE_GPT2, r"\p{N}+", "[0-9][0-9][0-9]"]),
    PreFamily {
        ignore_merges: true,
        add_bos: true,
        ..family(
            &["llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral", "midm-2.0", "lfm2", "jina-v5-nano"],
            &[RE_LLAMA3],
        )
    },
    family(&["dbrx", "smaug-bpe"], &[RE_LLAMA3]),
    PreFamily { no_default_bos: true, ..family(&["chatglm-bpe"], &[RE_LLAMA3]) },
    PreFamily { no_default_bos: true, ignore_merges: true, ..family(&["glm4", "glm5"], &[RE_LLAMA3]) },
    family(
        &[
            "gpt-2",
            "phi-2",
            "jina-es",
            "jina-de",
            "gigachat",
            "jina-v2-es",
            "jina-v2-de",
            "a.x-4.0",
            "mellum",
            "modern-bert",
            "jina-v1-en",
            "jina-v2-code",
            "roberta-bpe",
            "exaone4",
            "mpt",
            "olmo",
            "jais",
            "trillion",
            "granite-docling",
        ],
        &[RE_GPT2],
    ),
    family(
        &["starcoder", "refact", "command-r", "smollm", "codeshell", "exaone", "minerva-7b", "mellum2"],
        &[r"\p{N}", RE_GPT2],
    ),
    family(
        &["qwen2", "deepseek-r1-qwen", "kormo", "f2llmv2", "megrez", "stablelm2", "hunyuan", "solar-open"],
        &[RE_QWEN2],
    ),
    family(&["falcon"], &[RE_PUNCT_RUNS, RE_GPT2, "[0-9][0-9][0-9]"]),
    PreFamily { ignore_merges: true, add_bos: true, ..family(&["tekken"], &[RE_TEKKEN]) },
    family(&["poro-chat", "bloom", "gpt3-finnish"], &[RE_BLOOM]),
    family(&["viking"], &[RE_BLOOM, r"\p{N}"]),
];

fn find_family(pre: &str) -> Option<&'static PreFamily> {
    PRE_FAMILIES.iter().find(|f| f.names.contains(&pre))
}

fn supported_pre_names() -> String {
    PRE_FAMILIES.iter().flat_map(|f| f.names.iter().copied()).collect::<Vec<_>>().join(", ")
}

/// A text tokenizer matching llama.cpp's, built on `tokenizers::Tokenizer`.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The file the tokenizer came from, for error messages.
    source: PathBuf,
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
    vocab_size: usize,
    /// Whether [`Tokenizer::encode`] may cut the text at [`piece_starts`] and encode the pieces
    /// in parallel: true only for the GGUF pre-tokenizer families whose regexes are known to
    /// split there anyway, with no added token containing a newline.
    parallel: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("source", &self.source)
            .field("vocab_size", &self.vocab_size)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

impl Tokenizer {
    /// Builds the tokenizer from GGUF metadata (llama.cpp's `tokenizer.ggml.*` keys).
    pub fn from_gguf(file: &GgufFile) -> Result<Tokenizer> {
        let path = file.path.as_path();
        let err = |msg: String| Error::Tokenizer { path: path.to_path_buf(), msg };

        let model = match file.get(KEY_MODEL) {
            None => return Err(err(format!("missing key '{KEY_MODEL}': the file carries no tokenizer"))),
            Some(v) => v.as_str().ok_or_else(|| err(format!("key '{KEY_MODEL}' is not a string")))?,
        };
        match model {
            "gpt2" => {}
            "llama" => {
                return Err(err(format!(
                    "{KEY_MODEL} = 'llama' (SentencePiece) is not supported yet; only 'gpt2' (byte-level BPE) is"
                )))
            }
            other => {
                return Err(err(format!("{KEY_MODEL} = '{other}' is not supported; only 'gpt2' (byte-level BPE) is")))
            }
        }

        // llama.cpp falls back to "default" (with a loud warning) when the key is absent.
        let pre = match file.get(KEY_PRE) {
            None => "default",
            Some(v) => v.as_str().ok_or_else(|| err(format!("key '{KEY_PRE}' is not a string")))?,
        };
        let family = find_family(pre).ok_or_else(|| {
            err(format!("{KEY_PRE} = '{pre}' is not a supported pre-tokenizer; supported: {}", supported_pre_names()))
        })?;

        let tokens = string_array(file, KEY_TOKENS)?
            .ok_or_else(|| err(format!("missing key '{KEY_TOKENS}' (the vocabulary)")))?;
        let merges = string_array(file, KEY_MERGES)?
            .ok_or_else(|| err(format!("missing key '{KEY_MERGES}' (required by a BPE vocabulary)")))?;
        let types = token_types(file, tokens.len())?;

        let n = tokens.len();
        // Special ids: llama.cpp starts from its BPE defaults, drops those out of range, and lets a
        // key override them only with an in-range id.
        let default_bos = if family.no_default_bos { None } else { Some(BPE_DEFAULT_SPECIAL_ID) };
        let bos = special_id(file, KEY_BOS_ID, default_bos, n)?;
        let eos = special_id(file, KEY_EOS_ID, Some(BPE_DEFAULT_SPECIAL_ID), n)?;
        let add_bos = match file.get(KEY_ADD_BOS) {
            None => family.add_bos,
            Some(v) => v.as_bool().ok_or_else(|| err(format!("key '{KEY_ADD_BOS}' is not a bool")))?,
        };

        let inner =
            build_bpe(&tokens, types.as_deref(), &merges, family, if add_bos { bos } else { None }).map_err(err)?;
        // An added token is matched before the regexes, and a user-defined one with a newline
        // could span a cut. (Control and unknown tokens are read as plain text.)
        let user_newline = types.as_deref().is_some_and(|types| {
            tokens.iter().zip(types).any(|(t, &ty)| ty == TOKEN_TYPE_USER_DEFINED && t.contains('\n'))
        });
        let parallel = !user_newline && family.regexes.iter().all(|re| CUT_SAFE_REGEXES.contains(re));
        Ok(Tokenizer { inner, source: path.to_path_buf(), bos, eos, add_bos, vocab_size: n, parallel })
    }

    /// Loads a Hugging Face `tokenizer.json`.
    ///
    /// BOS, EOS and `add_bos` come from a `tokenizer_config.json` beside it when there is one
    /// (`bos_token`, `eos_token`, `add_bos_token`). Otherwise `add_bos` and the BOS id are
    /// read off the post-processor: whether it puts a token in front of the text.
    pub fn from_file(path: &Path) -> Result<Tokenizer> {
        let err = |msg: String| Error::Tokenizer { path: path.to_path_buf(), msg };
        let json = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let mut inner = tokenizers::Tokenizer::from_bytes(&json).map_err(|e| err(e.to_string()))?;
        // parse_special = false: special tokens in the text are plain text.
        inner.set_encode_special_tokens(true);

        let config = read_tokenizer_config(path)?;
        let token_id = |name: &str| -> Result<Option<u32>> {
            match config.as_ref().and_then(|c| config_token(c, name)) {
                None => Ok(None),
                Some(text) => inner
                    .token_to_id(&text)
                    .map(Some)
                    .ok_or_else(|| err(format!("tokenizer_config.json: {name} '{text}' is not in the vocabulary"))),
            }
        };
        let mut bos = token_id("bos_token")?;
        let eos = token_id("eos_token")?;

        let prefix = post_processor_prefix(&inner).map_err(err)?;
        let add_bos = match config.as_ref().and_then(|c| c.get("add_bos_token")).and_then(|v| v.as_bool()) {
            Some(b) => b,
            None => prefix.is_some() && (bos.is_none() || prefix == bos),
        };
        if bos.is_none() {
            bos = prefix;
        }

        let vocab_size = inner.get_vocab(true).values().map(|&id| id as usize + 1).max().unwrap_or(0);
        // Any pre-tokenizer can come in a tokenizer.json: encode it whole.
        Ok(Tokenizer { inner, source: path.to_path_buf(), bos, eos, add_bos, vocab_size, parallel: false })
    }

    /// Encodes `text` with no special tokens added and none parsed, as llama.cpp's
    /// `common_tokenize(ctx, text, add_special = false, parse_special = false)`.
    ///
    /// A long text is cut where the pre-tokenizer splits anyway ([`piece_starts`]) and the
    /// pieces are encoded in parallel: the same ids (whole WikiText-2 test file against
    /// llama.cpp's in `tests/tokenizer_ids.rs`), in about half the time on two cores.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if !self.parallel {
            return self.encode_whole(text);
        }
        self.encode_in_pieces(text, PARALLEL_PIECE_BYTES)
    }

    /// [`Tokenizer::encode`] with pieces of at least `min_bytes`.
    fn encode_in_pieces(&self, text: &str, min_bytes: usize) -> Result<Vec<u32>> {
        let starts = piece_starts(text, min_bytes);
        let pieces: Vec<&str> = starts
            .iter()
            .zip(starts.iter().skip(1).chain([&text.len()]))
            .map(|(&a, &b)| &text[a..b])
            .collect();
        let ids: Vec<Vec<u32>> = pieces.par_iter().map(|p| self.encode_whole(p)).collect::<Result<_>>()?;
        Ok(ids.concat())
    }

    /// [`Tokenizer::encode`] in one piece.
    fn encode_whole(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode_fast(text, false).map_err(|e| self.err(format!("encode: {e}")))?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Decodes ids back to text. Special tokens are rendered as their text.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= self.vocab_size) {
            return Err(self.err(format!("token id {bad} is out of range (vocabulary of {})", self.vocab_size)));
        }
        self.inner.decode(ids, false).map_err(|e| self.err(format!("decode: {e}")))
    }

    /// The beginning-of-sequence token, if the vocabulary has one.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token, if the vocabulary has one.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// Whether the vocabulary asks for BOS in front of a prompt (`tokenizer.ggml.add_bos_token`).
    /// `encode` never adds it; llama-perplexity adds it per chunk when this is true.
    pub fn add_bos(&self) -> bool {
        self.add_bos
    }

    /// The number of token ids (the largest id plus one).
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Serializes to a Hugging Face `tokenizer.json`. `from_file` on the result tokenizes
    /// identically. When `add_bos` is set, the post-processor prepends BOS, which is how
    /// `from_file` recovers `add_bos` and the BOS id.
    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(|e| self.err(format!("serialize: {e}")))
    }

    /// A minimal `tokenizer_config.json` to write beside `to_json`'s output: BOS, EOS and
    /// `add_bos_token`, so that they survive the round trip even when `add_bos` is false.
    pub fn to_config_json(&self) -> Result<String> {
        let text = |id: Option<u32>| id.and_then(|id| self.inner.id_to_token(id));
        let config = serde_json::json!({
            "add_bos_token": self.add_bos,
            "add_eos_token": false,
            "bos_token": text(self.bos),
            "eos_token": text(self.eos),
            "tokenizer_class": "PreTrainedTokenizerFast",
        });
        serde_json::to_string_pretty(&config).map_err(|e| self.err(format!("serialize config: {e}")))
    }

    fn err(&self, msg: String) -> Error {
        Error::Tokenizer { path: self.source.clone(), msg }
    }
}

/// An array of strings under `key`: `None` when absent, an error when it has another type.
fn string_array<'a>(file: &'a GgufFile, key: &str) -> Result<Option<Vec<&'a str>>> {
    let Some(value) = file.get(key) else { return Ok(None) };
    let err = |msg: String| Error::Tokenizer { path: file.path.clone(), msg };
    let items = value.as_array().ok_or_else(|| err(format!("key '{key}' is not an array")))?;
    items
        .iter()
        .enumerate()
        .map(|(i, v)| v.as_str().ok_or_else(|| err(format!("key '{key}': item {i} is not a string"))))
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// `tokenizer.ggml.token_type`, when present: one integer per token.
fn token_types(file: &GgufFile, n_tokens: usize) -> Result<Option<Vec<i64>>> {
    let Some(value) = file.get(KEY_TOKEN_TYPE) else { return Ok(None) };
    let err = |msg: String| Error::Tokenizer { path: file.path.clone(), msg };
    let items = value.as_array().ok_or_else(|| err(format!("key '{KEY_TOKEN_TYPE}' is not an array")))?;
    if items.len() < n_tokens {
        return Err(err(format!("key '{KEY_TOKEN_TYPE}' has {} entries for {n_tokens} tokens", items.len())));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, v)| match *v {
            Value::I32(t) => Ok(t as i64),
            Value::I64(t) => Ok(t),
            _ => v
                .as_u64()
                .map(|t| t as i64)
                .ok_or_else(|| err(format!("key '{KEY_TOKEN_TYPE}': item {i} is not an integer"))),
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

/// A special-token id: the key's value when it is in range, else `default` when that is.
fn special_id(file: &GgufFile, key: &str, default: Option<u32>, n_tokens: usize) -> Result<Option<u32>> {
    let in_range = |id: u32| (id as usize) < n_tokens;
    let default = default.filter(|&id| in_range(id));
    match file.get(key) {
        None => Ok(default),
        Some(v) => {
            let id = v.as_u64().ok_or_else(|| Error::Tokenizer {
                path: file.path.clone(),
                msg: format!("key '{key}' is not a non-negative integer"),
            })?;
            Ok(u32::try_from(id).ok().filter(|&id| in_range(id)).or(default))
        }
    }
}

/// Builds the byte-level BPE tokenizer. Errors are plain messages; the caller adds the path.
fn build_bpe(
    tokens: &[&str],
    types: Option<&[i64]>,
    merges: &[&str],
    family: &PreFamily,
    bos_to_prepend: Option<u32>,
) -> std::result::Result<tokenizers::Tokenizer, String> {
    // The vocabulary. llama.cpp renames empty tokens and refuses duplicates (an assertion), so
    // we do the same, with an error instead of an abort.
    let texts: Vec<String> = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| if t.is_empty() { format!("[EMPTY_{i}]") } else { (*t).to_string() })
        .collect();
    let mut ids: HashMap<&str, u32> = HashMap::with_capacity(texts.len());
    for (i, t) in texts.iter().enumerate() {
        if let Some(first) = ids.insert(t.as_str(), i as u32) {
            return Err(format!("{KEY_TOKENS}: token {t:?} appears twice (ids {first} and {i})"));
        }
    }

    // Merges are "left right", split at the first space after the first byte. llama.cpp keeps
    // the first rank of a repeated pair. A merge whose parts or result are not tokens can never
    // yield a token, and `tokenizers` refuses it, so it is left out.
    let mut seen: HashSet<(&str, &str)> = HashSet::with_capacity(merges.len());
    let mut pairs: Vec<(String, String)> = Vec::with_capacity(merges.len());
    for m in merges {
        let Some((split, _)) = m.char_indices().skip(1).find(|&(_, c)| c == ' ') else { continue };
        let (left, right) = (&m[..split], &m[split + 1..]);
        if !ids.contains_key(left) || !ids.contains_key(right) || !ids.contains_key(format!("{left}{right}").as_str()) {
            continue;
        }
        if seen.insert((left, right)) {
            pairs.push((left.to_string(), right.to_string()));
        }
    }

    let vocab: Vocab = texts.iter().enumerate().map(|(i, t)| (t.clone(), i as u32)).collect();
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, pairs)
        .ignore_merges(family.ignore_merges)
        .build()
        .map_err(|e| format!("building the BPE model: {e}"))?;

    let mut steps: Vec<PreTokenizerWrapper> = Vec::with_capacity(family.regexes.len() + 1);
    for re in family.regexes {
        let split = Split::new(SplitPattern::Regex(re.to_string()), SplitDelimiterBehavior::Isolated, false)
            .map_err(|e| format!("compiling pre-tokenizer regex {re:?}: {e}"))?;
        steps.push(split.into());
    }
    // Bytes to GPT-2's printable characters. The splitting is done above, so no regex here.
    steps.push(ByteLevel::new(false, false, false).into());

    let mut inner = tokenizers::Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(Sequence::new(steps)));
    inner.with_decoder(Some(ByteLevelDecoder::new(false, false, false)));

    if let Some(bos) = bos_to_prepend {
        let text = &texts[bos as usize];
        // A template piece is looked up by name; the name must not contain ' ' or ':'.
        let name = if text.contains([' ', ':']) || text.starts_with('$') { "BOS" } else { text.as_str() };
        let special = SpecialToken::new(name.to_string(), vec![bos], vec![text.clone()]).map_err(|e| e.to_string())?;
        let single = Template::try_from(vec![name, "$A"])?;
        let pair = Template::try_from(vec![name.to_string(), "$A".into(), name.to_string() + ":1", "$B:1".into()])?;
        let processor = TemplateProcessing::builder()
            .single(single)
            .pair(pair)
            .special_tokens(vec![special])
            .build()
            .map_err(|e| format!("building the BOS post-processor: {e}"))?;
        inner.with_post_processor(Some(processor));
    }

    // Control and unknown tokens are special (and, with encode_special_tokens, read as plain
    // text); user-defined tokens are matched in the text before pre-tokenization.
    if let Some(types) = types {
        let mut special = Vec::new();
        let mut user = Vec::new();
        for (text, &ty) in texts.iter().zip(types) {
            match ty {
                TOKEN_TYPE_CONTROL | TOKEN_TYPE_UNKNOWN => special.push(AddedToken::from(text.clone(), true)),
                TOKEN_TYPE_USER_DEFINED => user.push(AddedToken::from(text.clone(), false)),
                _ => {}
            }
        }
        inner.add_special_tokens(&special);
        inner.add_tokens(&user);
    }
    inner.set_encode_special_tokens(true);
    Ok(inner)
}

/// `tokenizer_config.json` beside `tokenizer.json`, if there is one.
fn read_tokenizer_config(tokenizer_json: &Path) -> Result<Option<serde_json::Value>> {
    let path = tokenizer_json.with_file_name("tokenizer_config.json");
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::Tokenizer { path: path.clone(), msg: format!("invalid json: {e}") })
}

/// A token named in `tokenizer_config.json`, either as a string or as `{"content": …}`.
fn config_token(config: &serde_json::Value, name: &str) -> Option<String> {
    match config.get(name)? {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Object(o) => o.get("content")?.as_str().map(str::to_string),
        _ => None,
    }
}

/// The token the post-processor puts in front of the text, if any. Found by encoding a letter
/// with and without special tokens, which covers every post-processor kind.
fn post_processor_prefix(inner: &tokenizers::Tokenizer) -> std::result::Result<Option<u32>, String> {
    let with = inner.encode_fast("a", true).map_err(|e| e.to_string())?;
    let without = inner.encode_fast("a", false).map_err(|e| e.to_string())?;
    let (with, without) = (with.get_ids(), without.get_ids());
    Ok(match (with.first(), without.first()) {
        (Some(&first), Some(&plain)) if with.len() > without.len() && first != plain => Some(first),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufWriter;

    /// GPT-2's byte → printable character table.
    fn byte_chars() -> Vec<char> {
        let printable = |b: u32| (0x21..=0x7e).contains(&b) || (0xa1..=0xac).contains(&b) || (0xae..=0xff).contains(&b);
        let mut next = 256;
        (0u32..256)
            .map(|b| {
                if printable(b) {
                    char::from_u32(b).unwrap()
                } else {
                    next += 1;
                    char::from_u32(next - 1).unwrap()
                }
            })
            .collect()
    }

    fn strings(items: &[&str]) -> Value {
        Value::Array(items.iter().map(|s| Value::String(s.to_string())).collect())
    }

    /// A small byte-level vocabulary: two control tokens, the 256 byte characters, and a few
    /// merged tokens.
    fn toy_metadata() -> Vec<(&'static str, Value)> {
        let mut tokens: Vec<String> = vec!["<|endoftext|>".into(), "<|im_start|>".into()];
        tokens.extend(byte_chars().iter().map(|c| c.to_string()));
        let merged = ["Ġt", "he", "Ġthe", "in", "Ġa", "Ġin", "ing", "Ġth"];
        tokens.extend(merged.iter().map(|s| s.to_string()));
        let mut types = vec![Value::I32(3), Value::I32(3)];
        types.extend((2..tokens.len()).map(|_| Value::I32(1)));
        let token_refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
        vec![
            ("tokenizer.ggml.model", Value::String("gpt2".into())),
            ("tokenizer.ggml.pre", Value::String("smollm".into())),
            ("tokenizer.ggml.tokens", strings(&token_refs)),
            ("tokenizer.ggml.token_type", Value::Array(types)),
            ("tokenizer.ggml.merges", strings(&["Ġ t", "h e", "Ġt he", "i n", "Ġ a", "Ġ in", "in g", "Ġt h"])),
            ("tokenizer.ggml.bos_token_id", Value::U32(1)),
            ("tokenizer.ggml.eos_token_id", Value::U32(0)),
            ("tokenizer.ggml.add_bos_token", Value::Bool(true)),
        ]
    }

    fn open_with(meta: &[(&str, Value)]) -> (tempfile::TempDir, GgufFile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("toy.gguf");
        let mut w = GgufWriter::default();
        for (k, v) in meta {
            w.set(k, v.clone());
        }
        w.write(&path).unwrap();
        let file = GgufFile::open(&path).unwrap();
        (dir, file)
    }

    fn without(meta: Vec<(&'static str, Value)>, key: &str) -> Vec<(&'static str, Value)> {
        meta.into_iter().filter(|(k, _)| *k != key).collect()
    }

    fn with(meta: Vec<(&'static str, Value)>, key: &'static str, value: Value) -> Vec<(&'static str, Value)> {
        let mut meta = without(meta, key);
        meta.push((key, value));
        meta
    }

    #[test]
    fn encoding_in_pieces_gives_the_ids_of_the_whole_text() {
        // Line breaks, runs of spaces, tabs, CRLF, digits, contractions, punctuation before
        // newlines, non-ASCII letters and whitespace, in a pseudo-random order.
        let parts = [
            "\n", " ", "\n ", "  ", "\n \n ", "a", "the", " in", "1", "23", "456", "!", "?!\n", "é", "\u{3000}", "\t",
            "'s", "'LL", ".\n", "\r\n", " = ", "日本", "\n\n", "\n 7", "\n é", "\n !", "\n\t",
        ];
        let mut state = 12345u64;
        let mut text = String::new();
        for _ in 0..4000 {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            text.push_str(parts[(state >> 33) as usize % parts.len()]);
        }
        // Whitespace merges, so that a wrong cut inside a run of whitespace changes the ids.
        let mut meta = toy_metadata();
        let extra = [("Ċ Ġ", "ĊĠ"), ("Ġ Ġ", "ĠĠ"), ("Ċ Ċ", "ĊĊ"), ("ĊĠ Ġ", "ĊĠĠ"), ("ĉ Ġ", "ĉĠ")];
        for (key, value) in meta.iter_mut() {
            match (*key, value) {
                ("tokenizer.ggml.tokens", Value::Array(v)) => v.extend(extra.iter().map(|e| Value::String(e.1.into()))),
                ("tokenizer.ggml.token_type", Value::Array(v)) => v.extend(extra.iter().map(|_| Value::I32(1))),
                ("tokenizer.ggml.merges", Value::Array(v)) => v.extend(extra.iter().map(|e| Value::String(e.0.into()))),
                _ => {}
            }
        }
        for pre in ["smollm", "gpt-2", "llama-bpe", "qwen2", "tekken"] {
            let (_dir, file) = open_with(&with(meta.clone(), "tokenizer.ggml.pre", Value::String(pre.into())));
            let tok = Tokenizer::from_gguf(&file).unwrap();
            assert!(tok.parallel, "{pre}");
            let whole = tok.encode_whole(&text).unwrap();
            for min_bytes in [1, 2, 7, 64, 1000] {
                assert!(piece_starts(&text, min_bytes).len() > 3, "{pre}: the text must be cut");
                assert_eq!(tok.encode_in_pieces(&text, min_bytes).unwrap(), whole, "{pre}, pieces of {min_bytes}");
            }
        }
        // Families with other regexes are encoded whole.
        let (_dir, file) = open_with(&with(toy_metadata(), "tokenizer.ggml.pre", Value::String("falcon".into())));
        assert!(!Tokenizer::from_gguf(&file).unwrap().parallel);
    }

    #[test]
    fn piece_starts_cut_after_a_newline_before_a_space_and_a_letter() {
        assert_eq!(piece_starts("ab\n cd\n  ef\n \n g\n\nh\n 7\n !", 1), vec![0, 3, 14]);
        assert_eq!(piece_starts("ab\n cd\n ef", 100), vec![0]);
        assert_eq!(piece_starts("", 1), vec![0]);
        assert_eq!(piece_starts("x\n ", 1), vec![0]);
        assert_eq!(piece_starts("x\n \u{3000}y\n é\n z", 1), vec![0, 12]);
    }

    #[test]
    fn missing_tokens_is_an_error_naming_file_and_key() {
        let (_dir, file) = open_with(&without(toy_metadata(), "tokenizer.ggml.tokens"));
        let e = Tokenizer::from_gguf(&file).unwrap_err();
        assert!(matches!(e, Error::Tokenizer { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("tokenizer.ggml.tokens"), "{msg}");
        assert!(msg.contains("toy.gguf"), "{msg}");
    }

    #[test]
    fn no_tokenizer_at_all_is_an_error() {
        let (_dir, file) = open_with(&[("general.architecture", Value::String("llama".into()))]);
        let msg = Tokenizer::from_gguf(&file).unwrap_err().to_string();
        assert!(msg.contains("tokenizer.ggml.model"), "{msg}");
    }

    #[test]
    fn unknown_pre_is_an_error_listing_the_supported_ones() {
        let meta = with(toy_metadata(), "tokenizer.ggml.pre", Value::String("no-such-pre".into()));
        let (_dir, file) = open_with(&meta);
        let msg = Tokenizer::from_gguf(&file).unwrap_err().to_string();
        assert!(msg.contains("no-such-pre"), "{msg}");
        assert!(msg.contains("smollm") && msg.contains("llama-bpe") && msg.contains("qwen2"), "{msg}");
    }

    #[test]
    fn sentencepiece_is_a_clear_error() {
        let meta = with(toy_metadata(), "tokenizer.ggml.model", Value::String("llama".into()));
        let (_dir, file) = open_with(&meta);
        let msg = Tokenizer::from_gguf(&file).unwrap_err().to_string();
        assert!(msg.contains("not supported"), "{msg}");
    }

    #[test]
    fn bad_merges_type_is_an_error() {
        let meta = with(toy_metadata(), "tokenizer.ggml.merges", Value::U32(3));
        let (_dir, file) = open_with(&meta);
        let msg = Tokenizer::from_gguf(&file).unwrap_err().to_string();
        assert!(msg.contains("tokenizer.ggml.merges"), "{msg}");
    }

    #[test]
    fn every_family_regex_compiles() {
        for fam in PRE_FAMILIES {
            for re in fam.regexes {
                Split::new(SplitPattern::Regex(re.to_string()), SplitDelimiterBehavior::Isolated, false)
                    .unwrap_or_else(|e| panic!("{re}: {e}"));
            }
        }
    }

    #[test]
    fn toy_vocab_encodes_like_llama_cpp() {
        let (_dir, file) = open_with(&toy_metadata());
        let tok = Tokenizer::from_gguf(&file).unwrap();
        assert_eq!(tok.vocab_size(), 2 + 256 + 8);
        assert_eq!(tok.bos_id(), Some(1));
        assert!(tok.add_bos());
        let id = |s: &str| tok.inner.token_to_id(s).unwrap();

        // Merges apply by rank inside each piece: " the" and " thing".
        assert_eq!(tok.encode(" the thing").unwrap(), vec![id("Ġthe"), id("Ġth"), id("ing")]);
        // smollm splits digits one by one before GPT-2's regex.
        assert_eq!(tok.encode("2024").unwrap(), vec![id("2"), id("0"), id("2"), id("4")]);
        // Two spaces before a word: one piece of one space, then " a".
        assert_eq!(tok.encode("  a").unwrap(), vec![id("Ġ"), id("Ġa")]);
        // No BOS is added.
        assert_eq!(tok.encode("").unwrap(), Vec::<u32>::new());
        // Control tokens in the text are plain text (parse_special = false).
        let ids = tok.encode("<|im_start|>in").unwrap();
        assert!(!ids.contains(&1), "{ids:?}");
        assert_eq!(tok.decode(&ids).unwrap(), "<|im_start|>in");
        // Non-ASCII text goes through byte-level characters and back.
        let text = "naïve café — 東京\n\n  end";
        assert_eq!(tok.decode(&tok.encode(text).unwrap()).unwrap(), text);
        assert!(tok.decode(&[100_000]).is_err());
    }

    #[test]
    fn json_round_trip_tokenizes_identically() {
        let (dir, file) = open_with(&toy_metadata());
        let tok = Tokenizer::from_gguf(&file).unwrap();
        let json_path = dir.path().join("tokenizer.json");
        std::fs::write(&json_path, tok.to_json().unwrap()).unwrap();

        let back = Tokenizer::from_file(&json_path).unwrap();
        let paragraph = "The thing is, in 2024 the   tokenizer's <|im_start|> handling\n\n\tmust agree — \
                         naïvely or not — with llama.cpp: 1,234.5 ids!";
        assert_eq!(back.encode(paragraph).unwrap(), tok.encode(paragraph).unwrap());
        assert_eq!(back.vocab_size(), tok.vocab_size());
        // No tokenizer_config.json: add_bos and BOS come from the post-processor.
        assert!(back.add_bos());
        assert_eq!(back.bos_id(), Some(1));

        // With a tokenizer_config.json beside it, that decides.
        std::fs::write(dir.path().join("tokenizer_config.json"), tok.to_config_json().unwrap()).unwrap();
        let back = Tokenizer::from_file(&json_path).unwrap();
        assert_eq!((back.add_bos(), back.bos_id(), back.eos_id()), (true, Some(1), Some(0)));
        std::fs::write(dir.path().join("tokenizer_config.json"), r#"{"add_bos_token": false}"#).unwrap();
        assert!(!Tokenizer::from_file(&json_path).unwrap().add_bos());
    }

    #[test]
    fn missing_bos_key_uses_llama_cpp_default() {
        let meta = without(without(toy_metadata(), "tokenizer.ggml.bos_token_id"), "tokenizer.ggml.add_bos_token");
        let (_dir, file) = open_with(&meta);
        let tok = Tokenizer::from_gguf(&file).unwrap();
        assert_eq!(tok.bos_id(), Some(11));
        assert!(!tok.add_bos());
    }
}
