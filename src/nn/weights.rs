//! Reading named tensors from `.safetensors` and PyTorch zip `.pth` files.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};

use crate::error::{Error, Result};
use crate::imaging;

/// The tensors of a weights file plus the safetensors metadata (empty for `.pth`).
#[derive(Debug)]
pub struct WeightFile {
    pub path: PathBuf,
    /// The loaded tensors (see [`WeightFile::load_only`]).
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
    /// The name of every tensor in the file, loaded or not.
    names: Vec<String>,
}

/// The container format, told by the file's first bytes rather than its extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Safetensors,
    Zip,
}

fn sniff(path: &Path) -> Result<Format> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::weights(path, e))?;
    let mut head = [0u8; 9];
    let n = file.read(&mut head).map_err(|e| Error::weights(path, e))?;
    if n >= 4 && &head[..4] == b"PK\x03\x04" {
        return Ok(Format::Zip);
    }
    // safetensors: u64 little-endian header length, then a JSON object.
    if n == 9 && head[8] == b'{' {
        return Ok(Format::Safetensors);
    }
    Err(Error::weights(
        path,
        "not a weights file (expected .safetensors or a PyTorch zip .pth)",
    ))
}

impl WeightFile {
    /// Loads every tensor as f32 on `device`.
    pub fn load(path: &Path, device: &Device) -> Result<Self> {
        Self::load_only(path, device, |_| true)
    }

    /// Loads the tensors whose names pass `keep` as f32 on `device`; the others are listed but
    /// not read. A `.safetensors` file is read one kept tensor at a time, so a VGG19 file with
    /// its 470 MB classifier costs only the conv weights' memory.
    pub fn load_only(path: &Path, device: &Device, keep: impl Fn(&str) -> bool) -> Result<Self> {
        let (tensors, metadata, names) = match sniff(path)? {
            Format::Safetensors => load_safetensors(path, &keep)?,
            Format::Zip => {
                let all = load_pth(path)?;
                let names = all.keys().cloned().collect();
                let kept = all.into_iter().filter(|(name, _)| keep(name)).collect();
                (kept, HashMap::new(), names)
            }
        };
        Self::assemble(path, (tensors, metadata, names), device)
    }

    /// A `.safetensors` file held in memory (a model built into the program), named `name` in
    /// errors; every tensor is loaded as f32 on `device`.
    pub fn from_bytes(bytes: &[u8], name: &Path, device: &Device) -> Result<Self> {
        let mut reader = std::io::Cursor::new(bytes);
        let loaded = read_safetensors(&mut reader, bytes.len() as u64, name, &|_| true)?;
        Self::assemble(name, loaded, device)
    }

    /// The loaded tensors as f32 on `device`, with the file's metadata and names.
    fn assemble(path: &Path, (tensors, metadata, names): Loaded, device: &Device) -> Result<Self> {
        let tensors = tensors
            .into_iter()
            .map(|(name, t)| {
                let t = t
                    .to_dtype(DType::F32)
                    .and_then(|t| t.to_device(device))
                    .map_err(|e| Error::weights(path, format!("tensor {name}: {e}")))?;
                Ok((name, t))
            })
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(Self {
            path: path.to_path_buf(),
            tensors,
            metadata,
            names,
        })
    }

    /// The tensor `name`, checked against the expected shape.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Tensor> {
        let t = self
            .tensors
            .get(name)
            .ok_or_else(|| Error::weights(&self.path, format!("missing tensor `{name}`")))?;
        if t.dims() != shape {
            return Err(Error::weights(
                &self.path,
                format!(
                    "tensor `{name}` has shape {:?}, expected {:?}",
                    t.dims(),
                    shape
                ),
            ));
        }
        Ok(t.clone())
    }

    /// Whether the file has a tensor `name` (loaded or not).
    pub fn contains(&self, name: &str) -> bool {
        self.names.iter().any(|n| n == name)
    }

    /// Every tensor name in the file, loaded or not.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }
}

/// Loaded tensors, the safetensors metadata, and every tensor name.
type Loaded = (
    HashMap<String, Tensor>,
    HashMap<String, String>,
    Vec<String>,
);

/// Headers larger than this are refused (VGG19's is ~3 KB, safetensors' own limit is 100 MB).
const MAX_HEADER_BYTES: u64 = 100_000_000;

/// One tensor's entry in a safetensors header.
#[derive(serde::Deserialize)]
struct TensorEntry {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: (u64, u64),
}

/// Reads the header, then only the kept tensors' bytes, each straight into its own buffer:
/// the whole file is never held in memory.
fn load_safetensors(path: &Path, keep: &dyn Fn(&str) -> bool) -> Result<Loaded> {
    let mut file = std::fs::File::open(path).map_err(|e| Error::weights(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::weights(path, e))?.len();
    read_safetensors(&mut file, file_len, path, keep)
}

/// [`load_safetensors`] from any seekable reader of `file_len` bytes (a file, or a model
/// built into the program); `path` names it in errors.
fn read_safetensors<R: Read + std::io::Seek>(
    file: &mut R,
    file_len: u64,
    path: &Path,
    keep: &dyn Fn(&str) -> bool,
) -> Result<Loaded> {
    let corrupt = |what: String| Error::weights(path, format!("corrupt safetensors file: {what}"));
    let mut len_bytes = [0u8; 8];
    file.read_exact(&mut len_bytes)
        .map_err(|e| corrupt(format!("header length: {e}")))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES || 8 + header_len > file_len {
        return Err(corrupt(format!(
            "header of {header_len} bytes in a file of {file_len}"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact(&mut header)
        .map_err(|e| corrupt(format!("header: {e}")))?;
    let mut entries: HashMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| corrupt(format!("header: {e}")))?;
    let metadata: HashMap<String, String> = match entries.remove("__metadata__") {
        Some(value) => {
            serde_json::from_value(value).map_err(|e| corrupt(format!("metadata: {e}")))?
        }
        None => HashMap::new(),
    };
    let data_start = 8 + header_len;
    let mut names = Vec::with_capacity(entries.len());
    let mut tensors = HashMap::new();
    for (name, value) in entries {
        if keep(&name) {
            let entry: TensorEntry = serde_json::from_value(value)
                .map_err(|e| corrupt(format!("entry of `{name}`: {e}")))?;
            let tensor = read_tensor(file, data_start, file_len, &entry)
                .map_err(|what| corrupt(format!("tensor `{name}`: {what}")))?;
            tensors.insert(name.clone(), tensor);
        }
        names.push(name);
    }
    Ok((tensors, metadata, names))
}

/// Reads one tensor's bytes; the error says what is wrong with its entry or data.
fn read_tensor<R: Read + std::io::Seek>(
    file: &mut R,
    data_start: u64,
    file_len: u64,
    entry: &TensorEntry,
) -> std::result::Result<Tensor, String> {
    use std::io::SeekFrom;
    let dtype = match entry.dtype.as_str() {
        "F32" => DType::F32,
        "F16" => DType::F16,
        "BF16" => DType::BF16,
        "F64" => DType::F64,
        other => {
            return Err(format!(
                "unsupported dtype {other} (expected F32, F16 or BF16)"
            ))
        }
    };
    let (start, end) = entry.data_offsets;
    let len = end
        .checked_sub(start)
        .ok_or_else(|| format!("data offsets {start}..{end} are reversed"))?;
    let elements: usize = entry.shape.iter().product();
    if len != (elements * dtype.size_in_bytes()) as u64 {
        return Err(format!(
            "{len} bytes of data for shape {:?} in {}",
            entry.shape, entry.dtype
        ));
    }
    if data_start + end > file_len {
        return Err(format!(
            "data ends at byte {} but the file has {file_len} (truncated?)",
            data_start + end
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(data_start + start))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| format!("reading data: {e}"))?;
    Tensor::from_raw_buffer(&bytes, dtype, &entry.shape, &Device::Cpu).map_err(|e| e.to_string())
}

fn load_pth(path: &Path) -> Result<HashMap<String, Tensor>> {
    // A pickle can name any Python function to call; candle's reader calls none, but a file
    // that tries is not a state dict, and saying so beats a puzzling "missing tensor".
    check_pickles(path)?;
    // Checkpoints sometimes wrap the weights as {"state_dict": {...}}; try plain first.
    let tensors = match candle_core::pickle::read_all(path) {
        Ok(t) if !t.is_empty() => t,
        _ => candle_core::pickle::read_all_with_key(path, Some("state_dict"))
            .map_err(|e| Error::weights(path, format!("not a readable PyTorch state dict: {e}")))?,
    };
    Ok(tensors.into_iter().collect())
}

/// Pickles larger than this are refused (a state dict's is kilobytes: the tensors' data lives
/// in separate entries).
const MAX_PICKLE_BYTES: u64 = 256 << 20;
/// Checks every pickle (`*.pkl`) of the zip at `path`: each may only name the globals that
/// rebuild tensors and state dicts ([`allowed_global`]).
fn check_pickles(path: &Path) -> Result<()> {
    let file = std::fs::File::open(path).map_err(|e| Error::weights(path, e))?;
    let mut archive = zip::ZipArchive::new(file)
        .map_err(|e| Error::weights(path, format!("corrupt zip archive: {e}")))?;
    for index in 0..archive.len() {
        // Raw: nothing is decompressed (torch.save stores every entry as it is).
        let entry = archive
            .by_index_raw(index)
            .map_err(|e| Error::weights(path, format!("corrupt zip archive: {e}")))?;
        let name = entry
            .name()
            .map_err(|e| Error::weights(path, format!("corrupt zip archive: {e}")))?
            .into_owned();
        if !name.ends_with(".pkl") {
            continue;
        }
        if entry.compression() != zip::CompressionMethod::Stored {
            return Err(Error::weights(
                path,
                format!(
                    "{name} is compressed, which torch.save never does, so it cannot be checked \
                     for code; re-save the file with torch.save"
                ),
            ));
        }
        if entry.size() > MAX_PICKLE_BYTES {
            return Err(Error::weights(
                path,
                format!(
                    "{name} is {} bytes, too large for a state dict's pickle",
                    entry.size()
                ),
            ));
        }
        let mut pickle = Vec::new();
        entry
            .take(MAX_PICKLE_BYTES)
            .read_to_end(&mut pickle)
            .map_err(|e| Error::weights(path, format!("corrupt zip archive: {name}: {e}")))?;
        scan_pickle(&pickle).map_err(|e| Error::weights(path, format!("{name}: {e}")))?;
    }
    Ok(())
}

/// The little-endian u32 at `at` (0 past the end: the scanner has checked the lengths).
fn le32(b: &[u8], at: usize) -> u32 {
    b.get(at..at + 4)
        .and_then(|bytes| bytes.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

/// The functions and classes a PyTorch state dict's pickle calls: tensor and parameter
/// rebuilding, storages, ordered dicts, and the numpy scalars training checkpoints store.
/// None runs code of the file's choosing (and candle's reader calls none of them anyway).
fn allowed_global(module: &str, name: &str) -> bool {
    match module {
        "collections" => matches!(name, "OrderedDict" | "defaultdict"),
        "torch._utils" => matches!(
            name,
            "_rebuild_tensor"
                | "_rebuild_tensor_v2"
                | "_rebuild_parameter"
                | "_rebuild_parameter_with_state"
        ),
        "torch._tensor" => matches!(name, "_rebuild_from_type_v2" | "Tensor"),
        "torch" => name.ends_with("Storage") || matches!(name, "Size" | "Tensor"),
        "torch.nn.parameter" => name == "Parameter",
        "__torch__" => name == "Module",
        "numpy.core.multiarray" | "numpy._core.multiarray" => name == "scalar",
        "numpy" => name == "dtype",
        "_codecs" => name == "encode",
        _ => false,
    }
}

/// How a pickle opcode's argument is laid out in the stream.
#[derive(Clone, Copy)]
enum PickleArg {
    /// A fixed number of bytes.
    Fixed(usize),
    /// Up to and including a newline.
    Line,
    /// A length of this many bytes (little-endian), then that many bytes.
    Sized(usize),
}

/// Walks the opcodes of one pickle up to its STOP and refuses it when it names a global
/// outside [`allowed_global`]: `GLOBAL` and `INST` name theirs in the stream; `STACK_GLOBAL`
/// takes them from the two strings pushed before it (followed through the memo); the extension
/// registry (`EXT1/2/4`) names none and is refused.
fn scan_pickle(bytes: &[u8]) -> std::result::Result<(), String> {
    use PickleArg::{Fixed, Line, Sized};
    let refuse = |what: String| {
        Err(format!(
            "refusing to run code from this file: it calls {what}"
        ))
    };
    // The two values on top of the stack when they are known strings (for STACK_GLOBAL).
    let mut top: [Option<String>; 2] = [None, None];
    let mut memo: HashMap<u64, Option<String>> = HashMap::new();
    let mut i = 0usize;
    loop {
        let Some(&op) = bytes.get(i) else {
            return Err("not a readable PyTorch state dict: its pickle has no end".into());
        };
        i += 1;
        let arg = match op {
            b'('
            | b')'
            | b'.'
            | b'0'
            | b'1'
            | b'2'
            | b'N'
            | b'Q'
            | b'R'
            | b'a'
            | b'b'
            | b'd'
            | b'}'
            | b'e'
            | b'l'
            | b']'
            | b'o'
            | b's'
            | b't'
            | b'u'
            | 0x81
            | 0x85..=0x89
            | 0x8f..=0x94
            | 0x97
            | 0x98 => Fixed(0),
            b'K' | b'h' | b'q' | 0x80 | 0x82 => Fixed(1),
            b'M' | 0x83 => Fixed(2),
            b'J' | b'j' | b'r' | 0x84 => Fixed(4),
            b'G' | 0x95 => Fixed(8),
            b'F' | b'I' | b'L' | b'P' | b'S' | b'V' | b'g' | b'p' | b'c' | b'i' => Line,
            b'U' | b'C' | 0x8a | 0x8c => Sized(1),
            b'T' | b'X' | b'B' | 0x8b => Sized(4),
            0x8d | 0x8e | 0x96 => Sized(8),
            other => {
                return Err(format!(
                    "not a readable PyTorch state dict: unknown pickle opcode 0x{other:02x}"
                ))
            }
        };
        let truncated = || "not a readable PyTorch state dict: its pickle is cut short".to_string();
        let line = |from: usize| -> std::result::Result<(&[u8], usize), String> {
            let rest = bytes.get(from..).ok_or_else(truncated)?;
            let n = rest
                .iter()
                .position(|&b| b == b'\n')
                .ok_or_else(truncated)?;
            Ok((&rest[..n], from + n + 1))
        };
        let (data, next) = match arg {
            Fixed(n) => (bytes.get(i..i + n).ok_or_else(truncated)?, i + n),
            Line => line(i)?,
            Sized(width) => {
                let len_bytes = bytes.get(i..i + width).ok_or_else(truncated)?;
                let mut len = [0u8; 8];
                len[..width].copy_from_slice(len_bytes);
                let len = usize::try_from(u64::from_le_bytes(len)).map_err(|_| truncated())?;
                let start = i + width;
                let end = start.checked_add(len).ok_or_else(truncated)?;
                (bytes.get(start..end).ok_or_else(truncated)?, end)
            }
        };
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let mut pushed: Option<Option<String>> = Some(None);
        match op {
            b'.' => return Ok(()),
            b'c' | b'i' => {
                let module = text(data);
                let (name, after) = line(next)?;
                let name = text(name);
                if !allowed_global(&module, &name) {
                    return refuse(format!("{module}.{name}"));
                }
                i = after;
                top = [None, None];
                continue;
            }
            0x93 => match (&top[1], &top[0]) {
                (Some(module), Some(name)) if allowed_global(module, name) => {}
                (Some(module), Some(name)) => return refuse(format!("{module}.{name}")),
                _ => return refuse("a function it does not name plainly".into()),
            },
            0x82..=0x84 => return refuse("a function from the pickle extension registry".into()),
            // Strings.
            b'S' => pushed = Some(Some(text(data).trim_matches(['\'', '"']).to_string())),
            b'V' | b'T' | b'U' | b'X' | 0x8c | 0x8d => pushed = Some(Some(text(data))),
            // Memo: writes push nothing; reads push what was stored.
            b'p' | b'q' | b'r' | 0x94 => {
                let index = match op {
                    b'p' => text(data).trim().parse().unwrap_or(u64::MAX),
                    b'q' => u64::from(data[0]),
                    b'r' => u64::from(le32(data, 0)),
                    _ => memo.len() as u64,
                };
                memo.insert(index, top[0].clone());
                pushed = None;
            }
            b'g' | b'h' | b'j' => {
                let index = match op {
                    b'g' => text(data).trim().parse().unwrap_or(u64::MAX),
                    b'h' => u64::from(data[0]),
                    _ => u64::from(le32(data, 0)),
                };
                pushed = Some(memo.get(&index).cloned().flatten());
            }
            0x80 | 0x95 => pushed = None,
            _ => {}
        }
        if let Some(value) = pushed {
            top = [value, top[0].take()];
        }
        i = next;
    }
}

/// Writes named tensors as `.safetensors` (converted to `dtype` when given, F32/F16/BF16 only)
/// with `metadata` in the header, atomically: a failure never leaves half a file at `path`.
pub fn save_safetensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    dtype: Option<DType>,
    metadata: HashMap<String, String>,
) -> Result<()> {
    let mut views = Vec::with_capacity(tensors.len());
    for (name, t) in tensors {
        let t = match dtype {
            Some(dtype) => t.to_dtype(dtype)?,
            None => t.clone(),
        };
        views.push((name.clone(), RawTensor::new(&t)?));
    }
    let bytes = safetensors::serialize(views, Some(metadata)).map_err(|e| Error::Write {
        path: path.to_path_buf(),
        reason: format!("cannot serialise: {e}"),
    })?;
    imaging::write_bytes_atomic(path, &bytes)
}

/// Owned tensor bytes implementing safetensors' `View` (candle implements it for the older
/// safetensors release it depends on, not the one this crate uses).
struct RawTensor {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl RawTensor {
    fn new(t: &Tensor) -> Result<Self> {
        let shape = t.dims().to_vec();
        let t = t.to_device(&Device::Cpu)?.flatten_all()?.contiguous()?;
        let (storage, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            return Err(Error::invalid("tensor not contiguous after contiguous()"));
        };
        // The element types are inferred from the storage; their to_le_bytes are inherent methods.
        let (dtype, data) = match &*storage {
            Storage::Cpu(CpuStorage::F32(v)) => (
                safetensors::Dtype::F32,
                v[start..end].iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            Storage::Cpu(CpuStorage::F16(v)) => (
                safetensors::Dtype::F16,
                v[start..end].iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            Storage::Cpu(CpuStorage::BF16(v)) => (
                safetensors::Dtype::BF16,
                v[start..end].iter().flat_map(|x| x.to_le_bytes()).collect(),
            ),
            _ => {
                return Err(Error::invalid(format!(
                    "cannot serialise a {:?} tensor",
                    t.dtype()
                )))
            }
        };
        Ok(Self { dtype, shape, data })
    }
}

impl safetensors::View for RawTensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        (&self.data).into()
    }

    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// Refuses a tensor with NaN or infinite values, naming it: such weights would paint black or
/// blank images without any error.
pub fn check_finite(t: &Tensor, path: &Path, name: &str) -> Result<()> {
    let values = t
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_device(&Device::Cpu)?
        .to_vec1::<f32>()?;
    if values.iter().all(|v| v.is_finite()) {
        return Ok(());
    }
    Err(Error::weights(
        path,
        format!("tensor `{name}` holds NaN or infinite values (a damaged or diverged model)"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(hex: &str) -> Vec<u8> {
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    /// Pickles written by Python's own pickler, protocols 0 to 5: plain data passes (with
    /// `OrderedDict` and `_codecs.encode`), functions that run code are refused by name
    /// (protocols 0-2 spell `builtins` as `__builtin__`).
    #[test]
    fn pickle_scan_passes_data_and_refuses_code() {
        let cases = [
            ("", "63636f6c6c656374696f6e730a4f726465726564446963740a70300a28745270310a56636f6e76312e7765696768740a70320a2849310a46322e350a492d330a4c3130303030303030303030303030303030303030304c0a567878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878780a70330a635f636f646563730a656e636f64650a70340a285662790a70350a566c6174696e310a70360a7470370a5270380a286c70390a49310a6149320a6128647031300a49330a49340a73614e4930310a4930300a4937303030300a492d37303030300a747031310a73566b0a7031320a2867320a67320a67320a747031330a732e"),
            ("", "63636f6c6c656374696f6e730a4f726465726564446963740a71002952710128580c000000636f6e76312e7765696768747102284b014740040000000000004afdffffff4c3130303030303030303030303030303030303030304c0a582c0100007878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787103635f636f646563730a656e636f64650a71042858020000006279710558060000006c6174696e3171067471075271085d7109284b014b027d710a4b034b0473654e4930310a4930300a4a701101004a90eefeff74710b58010000006b710c2868026802680274710d752e"),
            ("", "800263636f6c6c656374696f6e730a4f726465726564446963740a71002952710128580c000000636f6e76312e7765696768747102284b014740040000000000004afdffffff8a09000010632d5ec76b05582c0100007878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787103635f636f646563730a656e636f64650a710458020000006279710558060000006c6174696e3171068671075271085d7109284b014b027d710a4b034b0473654e88894a701101004a90eefeff74710b58010000006b710c68026802680287710d752e"),
            ("", "800363636f6c6c656374696f6e730a4f726465726564446963740a71002952710128580c000000636f6e76312e7765696768747102284b014740040000000000004afdffffff8a09000010632d5ec76b05582c01000078787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787871034302627971045d7105284b014b027d71064b034b0473654e88894a701101004a90eefeff74710758010000006b7108680268026802877109752e"),
            ("", "800495b0010000000000008c0b636f6c6c656374696f6e73948c0b4f72646572656444696374949394295294288c0c636f6e76312e77656967687494284b014740040000000000004afdffffff8a09000010632d5ec76b05582c0100007878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878789443026279945d94284b014b027d944b034b0473654e88894a701101004a90eefeff74948c016b946804680468048794752e"),
            ("", "800595bc010000000000008c0b636f6c6c656374696f6e73948c0b4f72646572656444696374949394295294288c0c636f6e76312e77656967687494284b014740040000000000004afdffffff8a09000010632d5ec76b05582c0100007878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878787878789443026279945d94284b014b027d944b034b0473654e88894a701101004a90eefeff96020000000000000061629474948c016b946804680468048794752e"),
            ("posix.system", "63706f7369780a73797374656d0a70300a2e"),
            ("builtins.exec", "635f5f6275696c74696e5f5f0a657865630a70300a2e"),
            ("posix.system", "800263706f7369780a73797374656d0a71002e"),
            ("builtins.exec", "8002635f5f6275696c74696e5f5f0a657865630a71002e"),
            ("posix.system", "80049514000000000000008c05706f736978948c0673797374656d9493942e"),
            ("builtins.exec", "80049515000000000000008c086275696c74696e73948c04657865639493942e"),
        ];
        for (calls, hex) in cases {
            let result = scan_pickle(&unhex(hex));
            if calls.is_empty() {
                assert_eq!(result, Ok(()), "{hex}");
            } else {
                let err = result.unwrap_err();
                let name = calls.rsplit('.').next().unwrap();
                assert!(
                    err.starts_with("refusing to run code from this file: it calls")
                        && err.ends_with(name),
                    "{err}"
                );
            }
        }
        assert!(scan_pickle(b"\x80\x02").is_err(), "a pickle without STOP");
        assert!(scan_pickle(b"\x82\x01.").is_err(), "the extension registry");
    }
}
