//! Reading named tensors from `.safetensors` and PyTorch zip `.pth` files.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{CpuStorage, DType, Device, Storage, Tensor};

use crate::error::{Error, Result};
use crate::imaging;

/// All tensors of a weights file plus the safetensors metadata (empty for `.pth`).
#[derive(Debug)]
pub struct WeightFile {
    pub path: PathBuf,
    pub tensors: HashMap<String, Tensor>,
    pub metadata: HashMap<String, String>,
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
        let (tensors, metadata) = match sniff(path)? {
            Format::Safetensors => load_safetensors(path)?,
            Format::Zip => (load_pth(path)?, HashMap::new()),
        };
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

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }
}

type Loaded = (HashMap<String, Tensor>, HashMap<String, String>);

fn load_safetensors(path: &Path) -> Result<Loaded> {
    let bytes = std::fs::read(path).map_err(|e| Error::weights(path, e))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| Error::weights(path, format!("corrupt safetensors header: {e}")))?;
    let metadata = header.metadata().clone().unwrap_or_default();
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .map_err(|e| Error::weights(path, format!("corrupt safetensors data: {e}")))?;
    Ok((tensors, metadata))
}

fn load_pth(path: &Path) -> Result<HashMap<String, Tensor>> {
    // Checkpoints sometimes wrap the weights as {"state_dict": {...}}; try plain first.
    let tensors = match candle_core::pickle::read_all(path) {
        Ok(t) if !t.is_empty() => t,
        _ => candle_core::pickle::read_all_with_key(path, Some("state_dict"))
            .map_err(|e| Error::weights(path, format!("not a readable PyTorch state dict: {e}")))?,
    };
    Ok(tensors.into_iter().collect())
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
