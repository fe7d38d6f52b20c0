//! Ground-truth metrics (in progress).
