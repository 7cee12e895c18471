//! The backend suite (`suite/mod.rs`) on the backends that need no
//! external server: the filesystem on a temporary directory and a bucket
//! in memory.

mod suite;

use suite::Fixture;

suite! {
    filesystem => Some(Fixture::filesystem());
    memory_bucket => Some(Fixture::memory_bucket());
}
