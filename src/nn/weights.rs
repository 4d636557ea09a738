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
                let all = super::pth::load_pth(path)?;
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
    // Every number here comes from the file: checked arithmetic, so a hostile header is an
    // error rather than an overflow (kept in fuzz/regressions/safetensors/).
    let bytes_for_shape = entry
        .shape
        .iter()
        .try_fold(dtype.size_in_bytes() as u64, |n, &d| {
            n.checked_mul(d as u64)
        });
    if bytes_for_shape != Some(len) {
        return Err(format!(
            "{len} bytes of data for shape {:?} in {}",
            entry.shape, entry.dtype
        ));
    }
    if data_start
        .checked_add(end)
        .is_none_or(|data_end| data_end > file_len)
    {
        return Err(format!(
            "data ends at byte {} but the file has {file_len} (truncated?)",
            u128::from(data_start) + u128::from(end)
        ));
    }
    let mut bytes = vec![0u8; len as usize];
    file.seek(SeekFrom::Start(data_start + start))
        .and_then(|_| file.read_exact(&mut bytes))
        .map_err(|e| format!("reading data: {e}"))?;
    Tensor::from_raw_buffer(&bytes, dtype, &entry.shape, &Device::Cpu).map_err(|e| e.to_string())
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
