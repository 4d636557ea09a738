//! What a style's folder already holds: nothing, a stopped training, or a finished style.

use std::path::Path;

use crate::engine::{peek_checkpoint, CheckpointInfo, CHECKPOINT_NAME, MODEL_NAME};
use crate::styles::MANIFEST_NAME;

/// What the style's folder holds already.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum FolderState {
    /// Nothing of ours: a new training can start.
    Free,
    /// A stopped (or interrupted) training: Resume continues it.
    Unfinished(CheckpointInfo),
    /// A finished style, with its final checkpoint when that is readable (training further
    /// resumes from it).
    Trained(Option<CheckpointInfo>),
    /// A checkpoint that cannot be read.
    Broken(String),
}

pub(super) fn inspect(folder: &Path) -> FolderState {
    if !folder.exists() {
        return FolderState::Free;
    }
    let trained = folder.join(MANIFEST_NAME).is_file() || folder.join(MODEL_NAME).is_file();
    let checkpoint_path = folder.join(CHECKPOINT_NAME);
    let checkpoint = checkpoint_path
        .is_file()
        .then(|| peek_checkpoint(&checkpoint_path));
    match (trained, checkpoint) {
        (false, None) => FolderState::Free,
        (false, Some(Ok(info))) => FolderState::Unfinished(info),
        (false, Some(Err(e))) => FolderState::Broken(e.to_string()),
        (true, checkpoint) => FolderState::Trained(checkpoint.and_then(Result::ok)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_told_apart() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(inspect(&dir.path().join("none")), FolderState::Free);
        assert_eq!(inspect(dir.path()), FolderState::Free);
        std::fs::write(dir.path().join(CHECKPOINT_NAME), b"garbage").unwrap();
        assert!(matches!(inspect(dir.path()), FolderState::Broken(_)));
        std::fs::write(
            dir.path().join(MANIFEST_NAME),
            b"model = \"model.safetensors\"",
        )
        .unwrap();
        assert_eq!(inspect(dir.path()), FolderState::Trained(None));
    }
}
