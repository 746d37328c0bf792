//! The GGUF reader: parses the header, metadata and tensor infos of a memory-mapped file and
//! hands out bounds-checked views of tensor data.

use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;

use super::{GgmlType, Value, DEFAULT_ALIGNMENT, GGUF_MAGIC};
use crate::error::{Error, Result};

/// Arrays nest at most this deep. GGUF writers never nest at all; the limit stops a hostile file
/// from recursing the parser into a stack overflow.
const MAX_ARRAY_DEPTH: usize = 4;
/// ggml's `GGML_MAX_DIMS`.
const MAX_DIMS: u32 = 4;

/// One tensor's entry in the tensor table.
#[derive(Clone, Debug)]
pub struct TensorInfo {
    pub name: String,
    /// ggml order: `dims[0]` is the row length (the contiguous dimension).
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Offset of the data from the start of the file.
    pub offset: u64,
    pub n_elements: u64,
    pub n_bytes: u64,
}

impl TensorInfo {
    /// Elements per row (`ne[0]`).
    pub fn row_len(&self) -> u64 {
        self.dims.first().copied().unwrap_or(1)
    }

    /// Number of rows (the product of `ne[1..]`).
    pub fn n_rows(&self) -> u64 {
        self.dims.iter().skip(1).product()
    }
}

/// A GGUF file, memory-mapped. Tensor data is borrowed straight from the mapping.
pub struct GgufFile {
    pub path: PathBuf,
    pub version: u32,
    pub alignment: u64,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    /// Offset of the tensor-data section from the start of the file.
    pub data_offset: u64,
    mmap: Mmap,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("version", &self.version)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

impl GgufFile {
    /// Opens and parses `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref().to_path_buf();
        let file = File::open(&path).map_err(|e| Error::io(&path, e))?;
        let len = file.metadata().map_err(|e| Error::io(&path, e))?.len();
        if len < 24 {
            return Err(Error::Gguf {
                path,
                msg: format!("file is {len} bytes, shorter than a gguf header (24 bytes)"),
            });
        }
        // SAFETY: the mapping is read-only and private to this process. A file changed on disk by
        // another process while mapped could change the bytes under us; every read below is
        // bounds-checked against the mapping's length, so that can give wrong numbers but not
        // out-of-bounds access. This is the same contract ripgrep and llama.cpp accept.
        let mmap = unsafe { Mmap::map(&file) }.map_err(|e| Error::io(&path, e))?;
        let parsed = Parser { buf: &mmap, pos: 0, path: &path }.parse()?;
        Ok(GgufFile {
            path,
            version: parsed.version,
            alignment: parsed.alignment,
            metadata: parsed.metadata,
            tensors: parsed.tensors,
            data_offset: parsed.data_offset,
            mmap,
        })
    }

    /// The metadata value for `key`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// A string value, or an error naming the key.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key)
            .ok_or_else(|| self.field_err(key, "missing"))?
            .as_str()
            .ok_or_else(|| self.field_err(key, "not a string"))
    }

    /// An unsigned integer value of any width, or an error naming the key.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get(key)
            .ok_or_else(|| self.field_err(key, "missing"))?
            .as_u64()
            .ok_or_else(|| self.field_err(key, "not a non-negative integer"))
    }

    /// A float value, or an error naming the key.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.get(key)
            .ok_or_else(|| self.field_err(key, "missing"))?
            .as_f64()
            .ok_or_else(|| self.field_err(key, "not a number"))
    }

    /// An array of strings, or an error naming the key.
    pub fn get_str_array(&self, key: &str) -> Result<Vec<&str>> {
        let arr = self
            .get(key)
            .ok_or_else(|| self.field_err(key, "missing"))?
            .as_array()
            .ok_or_else(|| self.field_err(key, "not an array"))?;
        arr.iter()
            .enumerate()
            .map(|(i, v)| v.as_str().ok_or_else(|| self.field_err(key, &format!("item {i} is not a string"))))
            .collect()
    }

    fn field_err(&self, key: &str, msg: &str) -> Error {
        Error::Config { path: self.path.clone(), field: key.to_string(), msg: msg.to_string() }
    }

    /// The tensor named `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw bytes of a tensor. Offsets were checked at open, so this cannot go out of bounds.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        &self.mmap[info.offset as usize..(info.offset + info.n_bytes) as usize]
    }

    /// The file's size in bytes.
    pub fn file_len(&self) -> u64 {
        self.mmap.len() as u64
    }
}

struct Parsed {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, Value)>,
    tensors: Vec<TensorInfo>,
    data_offset: u64,
}

/// A cursor over the mapped bytes. Every read checks the remaining length first.
struct Parser<'a> {
    buf: &'a [u8],
    pos: usize,
    path: &'a Path,
}

impl<'a> Parser<'a> {
    fn err(&self, msg: impl Into<String>) -> Error {
        Error::Gguf { path: self.path.to_path_buf(), msg: msg.into() }
    }

    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.err(format!(
                "truncated: {what} needs {n} bytes at offset {} but the file has {} bytes",
                self.pos,
                self.buf.len()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("take returned N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that is about to size an allocation of items at least `min_item_bytes` long each:
    /// it must fit in what remains of the file.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let need = n.checked_mul(min_item_bytes as u64);
        match need {
            Some(need) if need <= self.remaining() as u64 => Ok(n as usize),
            _ => Err(self.err(format!(
                "{what} is {n}, which cannot fit in the {} bytes left in the file (truncated or corrupt)",
                self.remaining()
            ))),
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u64(what)?;
        if len > self.remaining() as u64 {
            return Err(self.err(format!(
                "{what}: string length {len} at offset {} runs past the end of the file ({} bytes)",
                self.pos - 8,
                self.buf.len()
            )));
        }
        let bytes = self.take(len as usize, what)?;
        // llama.cpp stores some vocabularies with byte-level tokens that are not valid UTF-8 on
        // their own; keep them lossily rather than reject the whole file.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<Value> {
        Ok(match ty {
            0 => Value::U8(self.array::<1>(what)?[0]),
            1 => Value::I8(self.array::<1>(what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(what)?)),
            4 => Value::U32(self.u32(what)?),
            5 => Value::I32(i32::from_le_bytes(self.array(what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => return Err(self.err(format!("{what}: bool byte is {b}, not 0 or 1"))),
            },
            8 => Value::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.err(format!("{what}: arrays nested more than {MAX_ARRAY_DEPTH} deep")));
                }
                let item_ty = self.u32(what)?;
                let min = min_value_bytes(item_ty).ok_or_else(|| {
                    self.err(format!("{what}: unknown array item type {item_ty}"))
                })?;
                let n = self.count(&format!("{what}: array length"), min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_ty, what, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64(what)?),
            11 => Value::I64(i64::from_le_bytes(self.array(what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(what)?)),
            t => return Err(self.err(format!("{what}: unknown value type {t}"))),
        })
    }

    fn parse(mut self) -> Result<Parsed> {
        let magic = self.array::<4>("magic")?;
        if magic != GGUF_MAGIC {
            return Err(self.err(format!(
                "bad magic {:?} (expected \"GGUF\"); is this a gguf file?",
                String::from_utf8_lossy(&magic)
            )));
        }
        let version = self.u32("version")?;
        if version != 2 && version != 3 {
            return Err(self.err(format!("unsupported gguf version {version} (supported: 2, 3)")));
        }
        // A tensor info is at least 8 (name length) + 4 (n_dims) + 8 (one dim) + 4 (type) + 8 (offset).
        let n_tensors = self.count("tensor count", 32)?;
        // A key/value pair is at least 8 (key length) + 4 (type) + 1 (a u8 value).
        let n_kv = self.count("metadata count", 13)?;

        let mut metadata = Vec::with_capacity(n_kv);
        for i in 0..n_kv {
            let key = self.string(&format!("metadata key #{i}"))?;
            let ty = self.u32(&format!("metadata '{key}' type"))?;
            let value = self.value(ty, &format!("metadata '{key}'"), 0)?;
            metadata.push((key, value));
        }

        let alignment = match metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some((_, v)) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() && a <= 1 << 20 => a,
                _ => {
                    return Err(self.err(format!(
                        "general.alignment is {}, not a power of two up to 1 MiB",
                        v.display_short()
                    )))
                }
            },
        };

        let mut infos = Vec::with_capacity(n_tensors);
        for i in 0..n_tensors {
            let name = self.string(&format!("tensor #{i} name"))?;
            let n_dims = self.u32(&format!("tensor '{name}' n_dims"))?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(self.err(format!("tensor '{name}': n_dims is {n_dims}, not 1..={MAX_DIMS}")));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(self.u64(&format!("tensor '{name}' dims"))?);
            }
            let ty_id = self.u32(&format!("tensor '{name}' type"))?;
            let offset = self.u64(&format!("tensor '{name}' offset"))?;
            infos.push((name, dims, ty_id, offset));
        }

        let data_offset = align_up(self.pos as u64, alignment)
            .ok_or_else(|| self.err("tensor data offset overflows"))?;
        let file_len = self.buf.len() as u64;
        if data_offset > file_len {
            return Err(self.err(format!(
                "truncated: tensor data would start at {data_offset} but the file has {file_len} bytes"
            )));
        }

        let mut tensors = Vec::with_capacity(n_tensors);
        for (name, dims, ty_id, rel) in infos {
            let terr = |msg: String| Error::Tensor { path: self.path.to_path_buf(), tensor: name.clone(), msg };
            let ty = GgmlType::from_id(ty_id)
                .ok_or_else(|| terr(format!("unsupported ggml type id {ty_id}")))?;
            let n_elements = dims
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| terr(format!("dims {dims:?} overflow")))?;
            let n_bytes = ty.row_bytes(n_elements).ok_or_else(|| {
                terr(format!(
                    "{n_elements} elements is not a whole number of {ty} blocks of {}",
                    ty.block_size()
                ))
            })?;
            if dims[0] % ty.block_size() as u64 != 0 {
                return Err(terr(format!("row length {} is not a multiple of the {ty} block size {}", dims[0], ty.block_size())));
            }
            if rel % alignment != 0 {
                return Err(terr(format!("offset {rel} is not a multiple of the alignment {alignment}")));
            }
            let offset = data_offset
                .checked_add(rel)
                .ok_or_else(|| terr(format!("offset {rel} overflows")))?;
            let end = offset.checked_add(n_bytes).ok_or_else(|| terr(format!("offset {rel} + size overflows")))?;
            if end > file_len {
                return Err(terr(format!(
                    "data [{offset}, {end}) runs past the end of the file ({file_len} bytes); the file is truncated or corrupt"
                )));
            }
            tensors.push(TensorInfo { name, dims, ty, offset, n_elements, n_bytes });
        }
        Ok(Parsed { version, alignment, metadata, tensors, data_offset })
    }
}

/// The least multiple of `align` that is at least `x`.
pub(crate) fn align_up(x: u64, align: u64) -> Option<u64> {
    x.checked_add(align - 1).map(|v| v / align * align)
}

/// The fewest bytes one value of GGUF type `ty` occupies, or `None` for an unknown type.
fn min_value_bytes(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        10 | 11 | 12 | 8 => 8,
        9 => 12,
        _ => return None,
    })
}
