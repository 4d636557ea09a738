//! PyTorch zip `.pth` state dicts, read as untrusted data: every pickle is checked for code
//! before anything parses it, candle's pickle machine only builds the objects, and each
//! tensor's data is checked against its entry's size before a byte of it is allocated.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use candle_core::pickle::{Object, Stack, TensorInfo};
use candle_core::{Device, Tensor};

use crate::error::{Error, Result};

/// Every tensor of the state dict in the `.pth` at `path`, as stored (any dtype, on the CPU).
/// A checkpoint that wraps its weights as `{"state_dict": {...}, ...}` is unwrapped.
pub fn load_pth(path: &Path) -> Result<HashMap<String, Tensor>> {
    let file = std::fs::File::open(path).map_err(|e| Error::weights(path, e))?;
    let mut archive = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| Error::weights(path, format!("corrupt zip archive: {e}")))?;
    // A pickle can name any Python function to call; candle's reader calls none, but a file
    // that tries is not a state dict, and saying so beats a puzzling "missing tensor". The
    // bytes checked are the bytes parsed: the file is not read a second time.
    let pickles = checked_pickles(&mut archive, path)?;
    let unreadable =
        |e: String| Error::weights(path, format!("not a readable PyTorch state dict: {e}"));
    let mut infos = Vec::new();
    for (name, pickle) in pickles
        .iter()
        .filter(|(name, _)| name.ends_with("data.pkl"))
    {
        infos.extend(tensor_infos(name, pickle).map_err(unreadable)?);
    }
    let mut tensors = HashMap::with_capacity(infos.len());
    for info in infos {
        let tensor = read_tensor(&mut archive, &info)
            .map_err(|e| unreadable(format!("tensor `{}`: {e}", info.name)))?;
        tensors.insert(info.name, tensor);
    }
    Ok(tensors)
}

/// The tensors the pickle `name` (an archive's `.../data.pkl`) describes. Unlike candle's own
/// reader, an entry that looks like a tensor but cannot be rebuilt is an error naming it
/// (candle printed "skipping: ..." to stderr and dropped it).
fn tensor_infos(name: &str, pickle: &[u8]) -> std::result::Result<Vec<TensorInfo>, String> {
    let dir = Path::new(name.trim_end_matches(".pkl"));
    let object = without_panics(|| {
        let mut stack = Stack::empty();
        stack
            .read_loop(&mut &pickle[..])
            .and_then(|()| stack.finalize())
    })?
    .map_err(|e| format!("{name}: {e}"))?;
    state_dict_infos(object, dir)
}

/// The tensors of one unpickled object: a state dict, a TorchScript module's, or the
/// `state_dict` entry of a checkpoint dict when the dict itself holds no tensor.
fn state_dict_infos(object: Object, dir: &Path) -> std::result::Result<Vec<TensorInfo>, String> {
    let object = match object {
        Object::Build { callable, args } => match *callable {
            Object::Reduce { callable, .. }
                if matches!(&*callable, Object::Class { module_name, class_name }
                    if module_name == "__torch__" && class_name == "Module") =>
            {
                *args
            }
            _ => return Ok(Vec::new()),
        },
        other => other,
    };
    let Object::Dict(entries) = object else {
        return Ok(Vec::new());
    };
    let mut infos = Vec::new();
    let mut wrapped = None;
    for (key, value) in entries {
        if key == Object::Unicode("state_dict".into()) {
            wrapped = Some(value.clone());
        }
        let shown = match &key {
            Object::Unicode(name) => name.clone(),
            other => format!("{other:?}"),
        };
        match without_panics(|| value.into_tensor_info(key, dir))? {
            Ok(Some(info)) => infos.push(info),
            Ok(None) => {}
            Err(e) => {
                return Err(format!(
                    "entry `{shown}` cannot be rebuilt as a tensor ({e})"
                ))
            }
        }
    }
    match wrapped {
        Some(inner) if infos.is_empty() => state_dict_infos(inner, dir),
        _ => Ok(infos),
    }
}

/// One tensor's data: its zip entry must hold the bytes its shape needs (checked before any
/// allocation, so a hostile shape cannot ask for terabytes), stored contiguously (row- or
/// column-major, as torch writes).
fn read_tensor<R: Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    info: &TensorInfo,
) -> std::result::Result<Tensor, String> {
    let layout = &info.layout;
    let dims = layout.dims();
    let column_major = dims.len() > 1 && layout.is_fortran_contiguous();
    if !layout.is_contiguous() && !column_major {
        return Err(format!(
            "its data is strided ({:?}), which is not supported",
            layout.stride()
        ));
    }
    let entry = archive
        .by_name(&info.path)
        .map_err(|e| format!("its data {}: {e}", info.path))?;
    let available = entry.size();
    // candle's layout keeps the storage offset in bytes for `.pth` tensors.
    let offset = layout.start_offset() as u64;
    let needed = dims
        .iter()
        .try_fold(info.dtype.size_in_bytes() as u64, |n, &d| {
            n.checked_mul(d as u64)
        })
        .and_then(|n| n.checked_add(offset))
        .filter(|&n| n <= available)
        .ok_or_else(|| {
            format!(
                "its shape {dims:?} in {:?} needs more than the {available} bytes of {}",
                info.dtype, info.path
            )
        })?;
    let mut bytes = Vec::with_capacity((needed - offset) as usize);
    let mut entry = entry;
    std::io::copy(&mut (&mut entry).take(offset), &mut std::io::sink())
        .and_then(|_| (&mut entry).take(needed - offset).read_to_end(&mut bytes))
        .map_err(|e| format!("reading {}: {e}", info.path))?;
    if column_major {
        // Column-major data is the row-major data of the reversed shape, transposed back.
        let reversed: Vec<usize> = dims.iter().rev().copied().collect();
        let order: Vec<usize> = (0..dims.len()).rev().collect();
        Tensor::from_raw_buffer(&bytes, info.dtype, &reversed, &Device::Cpu)
            .and_then(|t| t.permute(order))
            .and_then(|t| t.contiguous())
    } else {
        Tensor::from_raw_buffer(&bytes, info.dtype, dims, &Device::Cpu)
    }
    .map_err(|e| e.to_string())
}

thread_local! {
    /// Set while [`without_panics`] runs on this thread: its panics are expected, and handled.
    static EXPECTING_PANICS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `read` (candle's pickle parsing) and turns a panic into an error. The `pth` fuzz target
/// found that a malformed pickle (a tensor rebuilt from too few arguments) makes candle 0.11
/// index out of bounds; a damaged file must be an error, not a crash. The panic hook is
/// wrapped once so that such a panic prints nothing; any other panic reaches the hook that
/// was there before.
fn without_panics<T>(read: impl FnOnce() -> T) -> std::result::Result<T, String> {
    static QUIET_HOOK: std::sync::Once = std::sync::Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !EXPECTING_PANICS.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
    EXPECTING_PANICS.with(|expecting| expecting.set(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(read));
    EXPECTING_PANICS.with(|expecting| expecting.set(false));
    result.map_err(|panic| {
        let detail = panic
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| panic.downcast_ref::<&str>().copied())
            .unwrap_or("malformed data");
        format!("its pickle is malformed ({detail})")
    })
}

/// Pickles larger than this are refused (a state dict's is kilobytes: the tensors' data lives
/// in separate entries).
const MAX_PICKLE_BYTES: u64 = 256 << 20;
/// Every pickle (`*.pkl`) of `archive` (the `.pth` at `path`, named in errors), with its
/// name, once each has been checked to name only the globals that rebuild tensors and state
/// dicts ([`allowed_global`]).
fn checked_pickles<R: Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    path: &Path,
) -> Result<Vec<(String, Vec<u8>)>> {
    let mut pickles = Vec::new();
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
        pickles.push((name, pickle));
    }
    Ok(pickles)
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
