//! The fault handler against the real kernel, inside this test process:
//! a userfaultfd over a mapping of our own stands for the restored
//! process's, a loopback connection for the source. A thread touching a
//! pending page is the faulting process; the test reads the handler's
//! page requests and answers them as the source would.

use super::*;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::os::fd::FromRawFd;

use crate::net::secure::PeerStream;

const PAGES: u64 = 16;

/// An anonymous private mapping of `PAGES` pages (or `.1`), unmapped when
/// dropped.
struct Area(u64, u64);

impl Area {
    fn new() -> Area {
        Area::of(PAGES)
    }

    fn of(pages: u64) -> Area {
        // SAFETY: a fresh anonymous mapping; nothing else refers to it.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                (pages * PAGE_SIZE) as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Area(p as u64, pages)
    }

    fn page(&self, i: u64) -> u64 {
        self.0 + i * PAGE_SIZE
    }
}

impl Drop for Area {
    fn drop(&mut self) {
        // SAFETY: our own mapping, no reference into it outlives the test.
        unsafe { libc::munmap(self.0 as *mut libc::c_void, (self.1 * PAGE_SIZE) as usize) };
    }
}

/// Reads the first byte of page `addr` on a thread of its own: it blocks
/// in the fault until the handler resolves it.
fn touch(addr: u64) -> std::thread::JoinHandle<u8> {
    std::thread::spawn(move || {
        // SAFETY: the page lies in a live mapping of this process.
        unsafe { std::ptr::read_volatile(addr as *const u8) }
    })
}

/// The handler for `area`, every page pending, running its fault loop;
/// and the source's end of its demand connection.
fn handler(area: &Area) -> (Arc<FaultHandler>, TcpStream) {
    handler_with(area, Prefetch::Fixed(4))
}

/// A userfaultfd with `area` registered for missing pages.
fn uffd_over(area: &Area) -> OwnedFd {
    let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | uffd::USER_MODE_ONLY;
    // SAFETY: userfaultfd takes flags only; the result is a new descriptor
    // that we own at once.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
    assert!(fd >= 0, "userfaultfd: {}", std::io::Error::last_os_error());
    // SAFETY: `fd` was just returned to us and nothing else owns it.
    let ufd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let features = uffd::FEATURE_EVENT_REMOVE | uffd::FEATURE_EVENT_UNMAP | uffd::FEATURE_THREAD_ID;
    uffd::api(&ufd, features).unwrap();
    uffd::register_missing(&ufd, area.0, area.1 * PAGE_SIZE).unwrap();
    ufd
}

fn handler_with(area: &Area, prefetch: Prefetch) -> (Arc<FaultHandler>, TcpStream) {
    let ufd = uffd_over(area);
    let mut map = LazyMap::new();
    map.add(area.0, area.1);

    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (source, _) = listener.accept().unwrap();
    source
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let pidfd = crate::host::sys::pidfd_open(std::process::id() as i32).unwrap();
    let h = Arc::new(
        FaultHandler::new(
            vec![(ufd, map)],
            PeerStream::plain(ours),
            prefetch,
            pidfd,
            None,
        )
        .unwrap(),
    );
    let looper = h.clone();
    std::thread::spawn(move || looper.run());
    (h, source)
}

/// `n` pages from `addr` as the source has them: each page filled with
/// its number in the area plus one.
fn content(area: &Area, addr: u64, n: u32) -> Vec<u8> {
    content_at(area.0, addr, n)
}

/// [`content`] for the area at `base`.
fn content_at(base: u64, addr: u64, n: u32) -> Vec<u8> {
    let first = (addr - base) / PAGE_SIZE;
    (0..u64::from(n))
        .flat_map(|k| vec![(first + k + 1) as u8; PAGE_SIZE as usize])
        .collect()
}

#[test]
fn a_fault_is_asked_of_the_source_and_its_answer_wakes_the_thread() {
    let area = Area::new();
    let (h, mut source) = handler(&area);
    let reader = touch(area.page(5) + 7);
    let req: PageRequest = frame::read_msg(&mut source).expect("a page request");
    // The faulting page first, with at most the prefetch after it.
    assert_eq!(req.addr, area.page(5));
    assert!((1..=4).contains(&req.npages), "{} pages asked", req.npages);
    h.install(req.addr, &content(&area, req.addr, req.npages));
    assert_eq!(
        reader.join().unwrap(),
        6,
        "the thread read the source's byte"
    );
    assert_eq!(h.left(), PAGES - u64::from(req.npages));
    // Pages of the window are in: touching them asks for nothing more.
    let last = area.page(5) + (u64::from(req.npages) - 1) * PAGE_SIZE;
    assert_eq!(touch(last).join().unwrap(), 5 + req.npages as u8);
    // The rest pushed in the background: post-copy is complete.
    for i in 0..PAGES {
        let a = area.page(i);
        if !(req.addr..req.addr + u64::from(req.npages) * PAGE_SIZE).contains(&a) {
            h.install_background(a, &content(&area, a, 1));
        }
    }
    let (outcome, discarded, samples) = h.wait();
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(discarded, 0);
    assert_eq!(samples.len(), 1, "one fault served over the network");
    // Every page holds what the source sent, byte for byte.
    for i in 0..PAGES {
        // SAFETY: every page of the live area is installed by now.
        let page =
            unsafe { std::slice::from_raw_parts(area.page(i) as *const u8, PAGE_SIZE as usize) };
        assert!(page.iter().all(|&b| b == (i + 1) as u8), "page {i}");
    }
    // Nothing else was asked of the source.
    source.set_nonblocking(true).unwrap();
    let mut more = [0u8; 1];
    assert!(source.read(&mut more).is_err(), "a second request was sent");
}

#[test]
fn readahead_asks_one_page_for_a_lone_fault_and_a_window_for_the_next_in_order() {
    let area = Area::new();
    let (h, mut source) = handler_with(&area, Prefetch::Readahead { max: 4 });
    let mut ask = |page: u64| {
        let reader = touch(area.page(page));
        let req: PageRequest = frame::read_msg(&mut source).expect("a page request");
        h.install(req.addr, &content(&area, req.addr, req.npages));
        assert_eq!(reader.join().unwrap(), page as u8 + 1, "page {page}");
        (req.addr, req.npages)
    };
    // A fault on its own: its page alone.
    assert_eq!(ask(2), (area.page(2), 1));
    // The next page in order: a window.
    assert_eq!(ask(3), (area.page(3), 4));
    // Right after that window: another.
    assert_eq!(ask(7), (area.page(7), 4));
    // Elsewhere: its page alone again.
    assert_eq!(ask(13), (area.page(13), 1));
    assert_eq!(h.left(), PAGES - 10);
}

#[test]
fn the_window_grows_only_for_a_fault_where_the_last_one_ended() {
    let ra = Prefetch::Readahead { max: 16 };
    let p = PAGE_SIZE;
    assert_eq!(window_pages(ra, 10 * p, (0, 0)), 1, "nothing asked yet");
    assert_eq!(window_pages(ra, 11 * p, (10 * p, 11 * p)), 16);
    assert_eq!(
        window_pages(ra, 12 * p, (10 * p, 11 * p)),
        1,
        "a page skipped"
    );
    assert_eq!(
        window_pages(ra, 10 * p, (10 * p, 26 * p)),
        1,
        "inside, on its way"
    );
    assert_eq!(window_pages(ra, 9 * p, (10 * p, 11 * p)), 1, "backwards");
    assert_eq!(window_pages(Prefetch::Fixed(8), 12 * p, (0, 0)), 8);
    assert_eq!(window_pages(Prefetch::Fixed(0), 12 * p, (0, 0)), 1);
}

#[test]
fn pages_the_process_discards_are_zero_filled_not_asked_for() {
    let area = Area::new();
    let (h, mut source) = handler(&area);
    // The process throws pages 10-11 away before they arrive: the
    // handler reads the remove event while the madvise waits for it.
    // SAFETY: a range of our own live mapping.
    let r = unsafe {
        libc::madvise(
            area.page(10) as *mut libc::c_void,
            (2 * PAGE_SIZE) as usize,
            libc::MADV_DONTNEED,
        )
    };
    assert_eq!(r, 0);
    assert_eq!(h.left(), PAGES - 2);
    // A fault there reads zeros, served here.
    assert_eq!(touch(area.page(11) + 1).join().unwrap(), 0);
    // A page arriving for a discarded address is not installed over the
    // process's zeros.
    h.install_background(area.page(10), &content(&area, area.page(10), 2));
    // SAFETY: a live page of the area.
    let first = unsafe { std::ptr::read_volatile(area.page(10) as *const u8) };
    assert_eq!(first, 0);
    source.set_nonblocking(true).unwrap();
    let mut more = [0u8; 1];
    assert!(source.read(&mut more).is_err(), "the source was asked");
    for i in (0..10).chain(12..PAGES) {
        h.install_background(area.page(i), &content(&area, area.page(i), 1));
    }
    let (outcome, discarded, _) = h.wait();
    assert_eq!(outcome, Outcome::Complete);
    assert_eq!(discarded, 2);
}

#[test]
fn background_installs_on_several_threads_beside_faults_and_discards_fill_every_page() {
    // 8 MiB a round, installed from two threads while other threads fault
    // on pages here and there and the process throws pages away; which
    // comes first differs from round to round.
    const N: u64 = 2048;
    fn discarded(i: u64) -> bool {
        i % 7 == 3
    }
    fn touched(i: u64) -> bool {
        i % 5 == 1 && !discarded(i)
    }
    for round in 0..6 {
        let area = Area::of(N);
        let base = area.0;
        let (h, source) = handler(&area);
        // Every other round, each piece waits between being taken off the
        // map and its copy: faults and discards meet copies under way.
        let pause = if round % 2 == 1 { 200 } else { 0 };
        h.copy_pause_us.store(pause, Ordering::Relaxed);
        let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server = serve(&h, source, base, &over);
        // Each installer takes every other 64-page frame, as the push's
        // installers take frames off their queue.
        let installers: Vec<_> = [0, 1]
            .into_iter()
            .map(|which| {
                let h = h.clone();
                std::thread::spawn(move || {
                    for f in (which..N / 64).step_by(2) {
                        let addr = base + f * 64 * PAGE_SIZE;
                        h.install_background(addr, &content_at(base, addr, 64));
                    }
                })
            })
            .collect();
        let readers: Vec<_> = [0, 1]
            .into_iter()
            .map(|which| {
                std::thread::spawn(move || {
                    (0..N)
                        .filter(|&i| touched(i) && i % 2 == which)
                        .map(|i| {
                            // SAFETY: a page of the live mapping.
                            let b = unsafe {
                                std::ptr::read_volatile((base + i * PAGE_SIZE + 1) as *const u8)
                            };
                            (i, b)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for i in (0..N).filter(|&i| discarded(i)) {
            // SAFETY: a page of our own live mapping.
            let r = unsafe {
                libc::madvise(
                    area.page(i) as *mut libc::c_void,
                    PAGE_SIZE as usize,
                    libc::MADV_DONTNEED,
                )
            };
            assert_eq!(r, 0);
        }
        for t in installers {
            t.join().unwrap();
        }
        for t in readers {
            for (i, b) in t.join().unwrap() {
                assert_eq!(
                    b,
                    (i + 1) as u8,
                    "round {round}: page {i} as a fault read it"
                );
            }
        }
        assert_eq!(
            finish(&h, &over, server),
            Outcome::Complete,
            "round {round}"
        );
        assert_filled(&area, discarded, &format!("round {round}"));
    }
}

/// Answers the handler's page requests on `source` as the source would
/// (pages of the area at `base`, see [`content_at`]) until `over` is set.
fn serve(
    h: &Arc<FaultHandler>,
    mut source: TcpStream,
    base: u64,
    over: &Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let (h, over) = (h.clone(), over.clone());
    source
        .set_read_timeout(Some(Duration::from_millis(20)))
        .unwrap();
    std::thread::spawn(move || {
        while !over.load(Ordering::Acquire) {
            if let Ok(req) = frame::read_msg::<PageRequest>(&mut source) {
                let first = (req.addr - base) / PAGE_SIZE;
                let data: Vec<u8> = (0..u64::from(req.npages))
                    .flat_map(|k| vec![(first + k + 1) as u8; PAGE_SIZE as usize])
                    .collect();
                h.install(req.addr, &data);
            }
        }
    })
}

/// Waits for post-copy's end, then stops the source's server.
fn finish(
    h: &FaultHandler,
    over: &std::sync::atomic::AtomicBool,
    server: std::thread::JoinHandle<()>,
) -> Outcome {
    let (outcome, _, _) = h.wait();
    over.store(true, Ordering::Release);
    server.join().unwrap();
    outcome
}

/// Every page of `area` reads as the source has it, or as zeros where
/// `zero` says (post-copy over: a page not installed reads as zeros).
fn assert_filled(area: &Area, zero: impl Fn(u64) -> bool, what: &str) {
    for i in 0..area.1 {
        // SAFETY: a whole page of our own live mapping.
        let got =
            unsafe { std::slice::from_raw_parts(area.page(i) as *const u8, PAGE_SIZE as usize) };
        let want = if zero(i) { 0 } else { (i + 1) as u8 };
        assert!(
            got.iter().all(|&b| b == want),
            "{what}: page {i} reads {} where {want} is due",
            got[0]
        );
    }
}

/// Throws page `i` of the area away, on a thread of its own (the madvise
/// waits until the handler reads its event).
fn discard(area: &Area, i: u64) -> std::thread::JoinHandle<()> {
    let addr = area.page(i);
    std::thread::spawn(move || {
        // SAFETY: a page of the test's own live mapping.
        let r = unsafe {
            libc::madvise(
                addr as *mut libc::c_void,
                PAGE_SIZE as usize,
                libc::MADV_DONTNEED,
            )
        };
        assert_eq!(r, 0);
    })
}

/// A post-copy of `area` with the source answering, and pages 0-3 taken
/// off the map by a background copy that waits 100 ms before it copies;
/// returns once it is taken (20 ms), with the copy's thread.
struct HeldCopy {
    h: Arc<FaultHandler>,
    over: Arc<std::sync::atomic::AtomicBool>,
    server: std::thread::JoinHandle<()>,
    copier: std::thread::JoinHandle<()>,
}

impl HeldCopy {
    fn start(area: &Area) -> HeldCopy {
        let (h, source) = handler(area);
        let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server = serve(&h, source, area.0, &over);
        h.copy_pause_us.store(100_000, Ordering::Relaxed);
        let copier = {
            let (h, addr) = (h.clone(), area.page(0));
            let data = content(area, addr, 4);
            std::thread::spawn(move || h.install_background(addr, &data))
        };
        std::thread::sleep(Duration::from_millis(20));
        HeldCopy {
            h,
            over,
            server,
            copier,
        }
    }
}

/// Installs pages 4 on, copies no longer held.
fn install_the_rest(h: &FaultHandler, area: &Area) {
    h.copy_pause_us.store(0, Ordering::Relaxed);
    let data = content(area, area.page(4), (PAGES - 4) as u32);
    h.install_background(area.page(4), &data);
}

#[test]
fn a_fault_and_a_discard_on_pages_under_a_background_copy_wait_for_it() {
    let area = Area::new();
    let held = HeldCopy::start(&area);
    // Neither may take the pages for missing meanwhile: the fault would
    // get a zero page, and the copy would land over the discard.
    let reader = touch(area.page(1) + 1);
    let discarded = discard(&area, 2);
    held.copier.join().unwrap();
    assert_eq!(reader.join().unwrap(), 2);
    discarded.join().unwrap();
    install_the_rest(&held.h, &area);
    assert_eq!(finish(&held.h, &held.over, held.server), Outcome::Complete);
    assert_filled(&area, |i| i == 2, "after a held copy");
}

#[test]
fn post_copy_is_not_complete_while_a_background_copy_may_yet_fail() {
    let area = Area::new();
    let held = HeldCopy::start(&area);
    // Every other page in: none is left on the map, but pages 0-3 are
    // not in yet.
    install_the_rest(&held.h, &area);
    // An event the copy then meets: it fails, and puts its pages back.
    let discarded = discard(&area, 2);
    held.copier.join().unwrap();
    discarded.join().unwrap();
    assert_eq!(finish(&held.h, &held.over, held.server), Outcome::Complete);
    assert_filled(&area, |i| i == 2, "after a held copy that failed");
}

#[test]
fn each_stage_median_is_taken_on_its_own() {
    let s = |request_us, round_trip_us, lock_us, install_us| Stages {
        request_us,
        round_trip_us,
        lock_us,
        install_us,
    };
    let all = [s(1, 300, 0, 9), s(3, 100, 5, 7), s(2, 200, 1, 8)];
    assert_eq!(Stages::medians(&all), s(2, 200, 1, 8));
    assert_eq!(Stages::medians(&[]), Stages::default());
}

#[test]
fn zero_marks_answer_faults_and_fill_around_pages_already_in() {
    let area = Area::new();
    let (h, mut source) = handler(&area);
    // A fault answered by a mark: the thread reads zeros.
    let reader = touch(area.page(5) + 7);
    let req: PageRequest = frame::read_msg(&mut source).expect("a page request");
    assert_eq!(req.addr, area.page(5));
    h.install(req.addr, Content::Zeros(u64::from(req.npages)));
    assert_eq!(reader.join().unwrap(), 0, "the thread read a zero");
    let marked = 5..5 + u64::from(req.npages);
    // Marks in the background over pages partly in already: those keep
    // their bytes.
    h.install_background(area.page(1), &content(&area, area.page(1), 1));
    h.install_background(area.page(0), Content::Zeros(4));
    for i in (4..PAGES).filter(|i| !marked.contains(i)) {
        h.install_background(area.page(i), &content(&area, area.page(i), 1));
    }
    let (outcome, _, _) = h.wait();
    assert_eq!(outcome, Outcome::Complete);
    assert_filled(
        &area,
        |i| i == 0 || i == 2 || i == 3 || marked.contains(&i),
        "marks",
    );
}

#[test]
fn a_range_of_zero_pages_goes_on_past_a_page_already_there() {
    let area = Area::of(4);
    let fd = uffd_over(&area);
    let page = vec![7u8; PAGE_SIZE as usize];
    assert_eq!(uffd::copy(&fd, area.page(1), &page).unwrap(), Install::Done);
    // Over the page that is there: the pages after it are mapped too.
    assert_eq!(
        uffd::zeropage(&fd, area.page(0), 4 * PAGE_SIZE).unwrap(),
        Install::Done
    );
    // Page 3 is in (a copy there finds it so), and reads as zeros.
    assert_eq!(uffd::copy(&fd, area.page(3), &page).unwrap(), Install::Done);
    for (i, want) in [(0, 0u8), (1, 7), (2, 0), (3, 0)] {
        // SAFETY: a page of our own live mapping, present by now.
        let got = unsafe { std::ptr::read_volatile(area.page(i) as *const u8) };
        assert_eq!(got, want, "page {i}");
    }
}
