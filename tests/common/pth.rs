//! Writes PyTorch zip-format state dicts (what `torch.save(model.state_dict(), path)` produces)
//! without torch, so tests can exercise the `.pth` loading path.
//!
//! Layout: `archive/data.pkl` (pickle protocol 2: an `OrderedDict` whose values are
//! `torch._utils._rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict())` with the
//! storage given as a persistent id `('storage', torch.FloatStorage, key, 'cpu', numel)`),
//! `archive/data/<key>` with the raw little-endian f32 values, and `archive/version`.
//! Entries are stored uncompressed, as torch does.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;

use candle_core::{DType, Tensor};
use zip::write::SimpleFileOptions;
use zip::CompressionMethod;

/// Writes `tensors` as a plain state dict (keys in the given order), all as f32.
pub fn write_state_dict(path: &Path, tensors: &[(String, Tensor)]) -> anyhow::Result<()> {
    write_pth(path, tensors, None)
}

/// Like [`write_state_dict`], optionally wrapped as `{wrap_key: state_dict}` (training
/// checkpoints often look like `{"state_dict": ..., "epoch": ...}`).
pub fn write_pth(
    path: &Path,
    tensors: &[(String, Tensor)],
    wrap_key: Option<&str>,
) -> anyhow::Result<()> {
    let mut pickle = Pickle::default();
    pickle.proto();
    if let Some(key) = wrap_key {
        pickle.empty_dict();
        pickle.unicode(key);
    }
    pickle.ordered_dict();
    let mut storages = Vec::with_capacity(tensors.len());
    if !tensors.is_empty() {
        pickle.mark();
        for (index, (name, tensor)) in tensors.iter().enumerate() {
            let key = index.to_string();
            let dims = tensor.dims().to_vec();
            pickle.unicode(name);
            pickle.rebuild_tensor(&key, &dims);
            let values = tensor
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1::<f32>()?;
            let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            storages.push((key, bytes));
        }
        pickle.op(b'u'); // SETITEMS
    }
    if wrap_key.is_some() {
        pickle.op(b's'); // SETITEM
    }
    pickle.op(b'.'); // STOP

    let file = std::fs::File::create(path)?;
    let mut zip = zip::ZipWriter::new(file);
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", options)?;
    zip.write_all(&pickle.bytes)?;
    zip.start_file("archive/byteorder", options)?;
    zip.write_all(b"little")?;
    for (key, bytes) in &storages {
        zip.start_file(format!("archive/data/{key}"), options)?;
        zip.write_all(bytes)?;
    }
    zip.start_file("archive/version", options)?;
    zip.write_all(b"3\n")?;
    zip.finish()?;
    Ok(())
}

/// Contiguous (row-major) strides for `dims`, as torch records them.
fn contiguous_strides(dims: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * dims[i + 1];
    }
    strides
}

/// A minimal pickle (protocol 2) emitter with just the opcodes torch's state dicts use.
#[derive(Default)]
struct Pickle {
    bytes: Vec<u8>,
}

impl Pickle {
    fn op(&mut self, code: u8) {
        self.bytes.push(code);
    }

    fn proto(&mut self) {
        self.bytes.extend_from_slice(&[0x80, 2]);
    }

    fn mark(&mut self) {
        self.op(b'(');
    }

    fn empty_dict(&mut self) {
        self.op(b'}');
    }

    fn global(&mut self, module: &str, name: &str) {
        self.op(b'c');
        self.bytes.extend_from_slice(module.as_bytes());
        self.bytes.push(b'\n');
        self.bytes.extend_from_slice(name.as_bytes());
        self.bytes.push(b'\n');
    }

    fn unicode(&mut self, s: &str) {
        self.op(b'X'); // BINUNICODE
        self.bytes
            .extend_from_slice(&(s.len() as u32).to_le_bytes());
        self.bytes.extend_from_slice(s.as_bytes());
    }

    /// Ints the way Python's pickler writes them: BININT1, BININT2, then BININT.
    fn int(&mut self, v: usize) {
        if v < 0x100 {
            self.op(b'K');
            self.bytes.push(v as u8);
        } else if v < 0x1_0000 {
            self.op(b'M');
            self.bytes.extend_from_slice(&(v as u16).to_le_bytes());
        } else {
            let v = i32::try_from(v).expect("pickle int fits in i32");
            self.op(b'J');
            self.bytes.extend_from_slice(&v.to_le_bytes());
        }
    }

    fn tuple_of_ints(&mut self, values: &[usize]) {
        if values.is_empty() {
            self.op(b')'); // EMPTY_TUPLE
            return;
        }
        self.mark();
        for &v in values {
            self.int(v);
        }
        self.op(b't'); // TUPLE
    }

    /// `collections.OrderedDict()`.
    fn ordered_dict(&mut self) {
        self.global("collections", "OrderedDict");
        self.op(b')');
        self.op(b'R'); // REDUCE
    }

    /// `torch._utils._rebuild_tensor_v2(<storage key>, 0, dims, strides, False, OrderedDict())`.
    fn rebuild_tensor(&mut self, key: &str, dims: &[usize]) {
        let numel: usize = dims.iter().product();
        self.global("torch._utils", "_rebuild_tensor_v2");
        self.mark();
        // Persistent id of the storage, resolved by the loader to archive/data/<key>.
        self.mark();
        self.unicode("storage");
        self.global("torch", "FloatStorage");
        self.unicode(key);
        self.unicode("cpu");
        self.int(numel);
        self.op(b't');
        self.op(b'Q'); // BINPERSID
        self.int(0); // storage offset
        self.tuple_of_ints(dims);
        self.tuple_of_ints(&contiguous_strides(dims));
        self.op(0x89); // NEWFALSE: requires_grad
        self.ordered_dict(); // backward hooks
        self.op(b't');
        self.op(b'R');
    }
}

/// Writes a zip `.pth` whose `archive/data.pkl` is `pickle` as given (no tensor data), laid
/// out as torch lays it out.
pub fn write_raw_pickle(path: &Path, pickle: &[u8]) -> anyhow::Result<()> {
    let file = std::fs::File::create(path)?;
    let mut zip = zip::ZipWriter::new(file);
    let options = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
    zip.start_file("archive/data.pkl", options)?;
    zip.write_all(pickle)?;
    zip.start_file("archive/byteorder", options)?;
    zip.write_all(b"little")?;
    zip.start_file("archive/version", options)?;
    zip.write_all(b"3\n")?;
    zip.finish()?;
    Ok(())
}

/// A pickle that calls `module.name("echo pwned")` when unpickled, as a malicious "model"
/// would: with `GLOBAL` (protocol 2, what torch writes) or, with `stack_global`, protocol 4's
/// `STACK_GLOBAL` taking the names from memoised strings.
pub fn pickle_calling(module: &str, name: &str, stack_global: bool) -> Vec<u8> {
    let mut pickle = Pickle::default();
    if stack_global {
        pickle.bytes.extend_from_slice(&[0x80, 4]);
        for s in [module, name] {
            pickle.op(0x8c); // SHORT_BINUNICODE
            pickle.bytes.push(s.len() as u8);
            pickle.bytes.extend_from_slice(s.as_bytes());
            pickle.op(0x94); // MEMOIZE
        }
        pickle.op(0x93); // STACK_GLOBAL
    } else {
        pickle.proto();
        pickle.global(module, name);
    }
    pickle.mark();
    pickle.unicode("echo pwned");
    pickle.op(b't');
    pickle.op(b'R'); // REDUCE: the call
    pickle.op(b'.');
    pickle.bytes
}
