//! Memory after the process runs: the fault handler, pages still to come
//! and what they read as, the keeper, pre-copied pages, page sets, fault samples.

pub mod content;
pub mod fault;
pub mod keeper;
pub mod lazy;
pub mod pageset;
pub mod reservoir;
pub mod store;

/// Starts one of post-copy's threads, named for what it does (a fault's
/// path crosses several threads of both agents; a scheduler trace tells
/// them apart by name). A thread that cannot start is a panic, as with
/// `std::thread::spawn`.
pub fn spawn_named<T, F>(name: &str, f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.into())
        .spawn(f)
        .expect("failed to spawn thread")
}

/// [`spawn_named`], the thread first set to run on `cpus` (`None`: where
/// it inherits): the fault handler's threads are started by a thread
/// pinned to one CPU for ptrace, and would inherit the pin.
pub fn spawn_on<T, F>(
    name: &str,
    cpus: Option<crate::host::sys::AffinityWords>,
    f: F,
) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    spawn_named(name, move || {
        crate::host::sys::take_cpus(cpus.as_ref());
        f()
    })
}
