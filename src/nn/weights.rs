//! Reading named tensors from `.safetensors` and PyTorch zip `.pth` files.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

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
