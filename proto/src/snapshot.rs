//! Checkpoint parts and failures <-> protobuf.

use weir_types::{ErrorClass, Failure, FileHandle, TaskSnapshot};

use crate::v1;

/// The wire form of a subtask's part of a checkpoint.
pub fn snapshot_to_proto(s: &TaskSnapshot) -> v1::TaskSnapshot {
    v1::TaskSnapshot {
        operators: s.operators.clone(),
        subtask: s.subtask,
        files: s.files.iter().map(|f| v1::FileHandle { path: f.path.clone(), size: f.size, crc32: f.crc32 }).collect(),
        backend: s.backend.clone(),
        local_names: s.local_names.clone(),
        file_operators: s.file_operators.clone(),
        parallelism: s.parallelism,
    }
}

/// A subtask's part of a checkpoint from the wire.
pub fn snapshot_from_proto(s: &v1::TaskSnapshot) -> TaskSnapshot {
    TaskSnapshot {
        operators: s.operators.clone(),
        subtask: s.subtask,
        files: s.files.iter().map(|f| FileHandle { path: f.path.clone(), size: f.size, crc32: f.crc32 }).collect(),
        backend: s.backend.clone(),
        local_names: s.local_names.clone(),
        file_operators: s.file_operators.clone(),
        parallelism: s.parallelism,
    }
}

/// The wire form of an error class.
pub fn class_to_proto(c: ErrorClass) -> v1::ErrorClass {
    match c {
        ErrorClass::User => v1::ErrorClass::User,
        ErrorClass::Corrupt => v1::ErrorClass::Corrupt,
        ErrorClass::Transient => v1::ErrorClass::Transient,
        ErrorClass::Internal => v1::ErrorClass::Internal,
    }
}

/// An error class from the wire; unspecified (an older sender) counts as
/// transient, the class that neither skips data nor blames the user.
pub fn class_from_proto(c: i32) -> ErrorClass {
    match v1::ErrorClass::try_from(c) {
        Ok(v1::ErrorClass::User) => ErrorClass::User,
        Ok(v1::ErrorClass::Corrupt) => ErrorClass::Corrupt,
        Ok(v1::ErrorClass::Internal) => ErrorClass::Internal,
        _ => ErrorClass::Transient,
    }
}

/// A failure from a message's text and class fields.
pub fn failure_from_proto(message: &str, class: i32) -> Failure {
    Failure::new(class_from_proto(class), message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshots_and_classes_round_trip() {
        let s = TaskSnapshot {
            operators: vec!["a".into(), "b".into()],
            subtask: 3,
            files: vec![FileHandle { path: "j/shared/x".into(), size: 9, crc32: 77 }],
            backend: "rocksdb".into(),
            local_names: vec!["000012.sst".into()],
            file_operators: vec![],
            parallelism: 4,
        };
        assert_eq!(snapshot_from_proto(&snapshot_to_proto(&s)), s);
        for c in [ErrorClass::User, ErrorClass::Corrupt, ErrorClass::Transient, ErrorClass::Internal] {
            assert_eq!(class_from_proto(class_to_proto(c) as i32), c);
        }
        assert_eq!(class_from_proto(0), ErrorClass::Transient);
    }
}
