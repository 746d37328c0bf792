//! The GGUF writer: metadata and tensors out to a file, version 3, honouring the alignment.
//!
//! The output goes to a temporary file beside the target and is renamed into place, so an
//! interrupted write never leaves a torn file under the final name.

use std::io::{BufWriter, Write};
use std::path::Path;

use super::reader::align_up;
use super::{GgmlType, Value, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use crate::error::{Error, Result};

/// A tensor to be written: its name, ggml dims (row length first), type and bytes.
pub struct WriterTensor<'a> {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    pub data: std::borrow::Cow<'a, [u8]>,
}

/// Collects metadata and tensors, then writes a GGUF v3 file.
#[derive(Default)]
pub struct GgufWriter<'a> {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<WriterTensor<'a>>,
}

impl<'a> GgufWriter<'a> {
    /// Sets `key` to `value`, replacing an existing entry in place to keep the key order.
    pub fn set(&mut self, key: &str, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
    }

    /// Sets `key` the way gguf's `gguf_set_val_*` does: any existing entry is removed and the
    /// key goes to the end. llama-quantize relies on this order.
    pub fn set_last(&mut self, key: &str, value: Value) {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_string(), value));
    }

    fn alignment(&self) -> u64 {
        self.metadata
            .iter()
            .find(|(k, _)| k == "general.alignment")
            .and_then(|(_, v)| v.as_u64())
            .unwrap_or(DEFAULT_ALIGNMENT)
    }

    /// Writes the file to `path` atomically (temporary file, then rename), without syncing:
    /// a GGUF file can always be made again (see [`crate::util::write_atomic_unsynced`]).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::util::write_atomic_unsynced(path, |w| self.write_to(w, path))
    }

    fn write_to(&self, w: &mut BufWriter<std::fs::File>, path: &Path) -> Result<()> {
        let io = |e| Error::io(path, e);
        let align = self.alignment();
        let mut buf: Vec<u8> = Vec::new();
        buf.extend_from_slice(&GGUF_MAGIC);
        buf.extend_from_slice(&3u32.to_le_bytes());
        buf.extend_from_slice(&(self.tensors.len() as u64).to_le_bytes());
        buf.extend_from_slice(&(self.metadata.len() as u64).to_le_bytes());
        for (k, v) in &self.metadata {
            put_str(&mut buf, k);
            buf.extend_from_slice(&v.type_id().to_le_bytes());
            put_value(&mut buf, v);
        }
        let mut offset = 0u64;
        let mut offsets = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            let expect = t.ty.row_bytes(t.dims.iter().product()).ok_or_else(|| Error::Tensor {
                path: path.to_path_buf(),
                tensor: t.name.clone(),
                msg: format!("dims {:?} are not whole {} blocks", t.dims, t.ty),
            })?;
            if expect != t.data.len() as u64 {
                return Err(Error::Tensor {
                    path: path.to_path_buf(),
                    tensor: t.name.clone(),
                    msg: format!("has {} bytes of data, its shape needs {expect}", t.data.len()),
                });
            }
            put_str(&mut buf, &t.name);
            buf.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
            for d in &t.dims {
                buf.extend_from_slice(&d.to_le_bytes());
            }
            buf.extend_from_slice(&t.ty.id().to_le_bytes());
            buf.extend_from_slice(&offset.to_le_bytes());
            offsets.push(offset);
            offset = align_up(offset + expect, align).expect("tensor offsets fit in u64");
        }
        let pad = align_up(buf.len() as u64, align).unwrap() as usize - buf.len();
        buf.resize(buf.len() + pad, 0);
        w.write_all(&buf).map_err(io)?;
        let zeros = vec![0u8; align as usize];
        let mut written = 0u64;
        for (t, &off) in self.tensors.iter().zip(&offsets) {
            debug_assert_eq!(written, off);
            w.write_all(&t.data).map_err(io)?;
            written += t.data.len() as u64;
            let next = align_up(written, align).unwrap();
            w.write_all(&zeros[..(next - written) as usize]).map_err(io)?;
            written = next;
        }
        Ok(())
    }
}

fn put_str(buf: &mut Vec<u8>, s: &str) {
    buf.extend_from_slice(&(s.len() as u64).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

fn put_value(buf: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => buf.push(*x),
        Value::I8(x) => buf.push(*x as u8),
        Value::U16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I16(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::U32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F32(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::Bool(x) => buf.push(*x as u8),
        Value::String(s) => put_str(buf, s),
        Value::Array(items) => {
            let ty = items.first().map(Value::type_id).unwrap_or(4);
            buf.extend_from_slice(&ty.to_le_bytes());
            buf.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for it in items {
                put_value(buf, it);
            }
        }
        Value::U64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::I64(x) => buf.extend_from_slice(&x.to_le_bytes()),
        Value::F64(x) => buf.extend_from_slice(&x.to_le_bytes()),
    }
}
