//! The threads that install pushed pages: the bulk lane's reader hands
//! each batch to the first free one, so that two pay the first writes to
//! fresh memory side by side while the next batch is received.

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use tracing::warn;

use crate::postcopy::fault::FaultHandler;

/// Threads installing pushed pages.
const INSTALLERS: usize = 2;
/// Batches received and waiting for an installer.
const QUEUED: usize = 4;

type Batch = (u64, Vec<u8>);

/// Installers of pushed pages for one post-copy.
pub struct Installers {
    handler: Arc<FaultHandler>,
    tx: Option<SyncSender<Batch>>,
    threads: Vec<JoinHandle<()>>,
}

impl Installers {
    /// Starts the installers of `handler`'s pushed pages, at `nice`. If
    /// no thread starts, batches are installed by the caller.
    pub fn start(handler: &Arc<FaultHandler>, nice: i32) -> Installers {
        let (tx, rx) = sync_channel::<Batch>(QUEUED);
        let rx = Arc::new(Mutex::new(rx));
        let mut threads = Vec::new();
        for _ in 0..INSTALLERS {
            let (h, rx) = (handler.clone(), rx.clone());
            let spawned = std::thread::Builder::new()
                .name("installer".into())
                .spawn(move || {
                    let _ = crate::host::sys::set_thread_nice(nice);
                    install_until_closed(&h, &rx);
                });
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => warn!(error = %e, "an installer thread did not start"),
            }
        }
        Installers {
            handler: handler.clone(),
            tx: (!threads.is_empty()).then_some(tx),
            threads,
        }
    }

    /// Installs `data`, pushed pages at `addr`, on the first free
    /// installer; waits while all are busy and the queue is full.
    pub fn install(&self, addr: u64, data: Vec<u8>) {
        let Some(tx) = &self.tx else {
            self.handler.install_background(addr, &data);
            return;
        };
        if let Err(back) = tx.send((addr, data)) {
            // Every installer ended (a panic): in from here.
            let (addr, data) = back.0;
            self.handler.install_background(addr, &data);
        }
    }
}

impl Drop for Installers {
    /// Waits until every batch handed over is installed.
    fn drop(&mut self) {
        self.tx = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn install_until_closed(h: &FaultHandler, rx: &Mutex<Receiver<Batch>>) {
    loop {
        let next = rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
        let Ok((addr, data)) = next else { return };
        h.install_background(addr, &data);
    }
}
