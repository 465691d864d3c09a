//! Engines on threads of their own writing into one sink on another thread.
//!
//! [`run_beside`] splits the customers between engines ([`engine::run_partitioned`]) and
//! hands what they decide to one [`Sink`] that lives on its own thread: a tick's SQLite
//! transaction (which cannot move between threads, so it is opened there). Each engine
//! writes into a [`Lane`], which hands batches over a bounded channel. (A backtest's
//! engines write their own parts of the files instead: [`crate::backtest::run`].)
//!
//! INVARIANT: the sink gets each lane's entries in the order the lane got them, and its
//! sends likewise. An engine decides for whole customers, so one customer's entries (and
//! sends) reach the sink in decision order whatever the number of engines.

use std::io;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use chrono::{DateTime, Utc};

use crate::engine::{self, Sink};
use crate::model::Model;
use crate::outcome::{Entry, EntryView, Send, SendView};
use crate::value::Record;

/// Entries and sends a lane hands over at once, at most, and batches that may wait, from
/// all lanes together.
const BATCH: usize = 4096;
const BATCHES_AHEAD: usize = 4;

#[derive(Default)]
struct Batch {
    /// With their moment's place in `Model::moments`.
    entries: Vec<(usize, Entry)>,
    sends: Vec<Send>,
}

/// One engine's way to the sink: a [`Sink`] that hands over batches, and what is left when
/// dropped.
struct Lane {
    batch: Batch,
    batches: SyncSender<Batch>,
}

impl Lane {
    fn hand_over(&mut self) {
        let batch = std::mem::take(&mut self.batch);
        if !batch.entries.is_empty() || !batch.sends.is_empty() {
            // A send fails only when the sink's thread has ended, which `run_beside`
            // reports.
            let _ = self.batches.send(batch);
        }
    }

    fn full(&self) -> bool {
        self.batch.entries.len() + self.batch.sends.len() >= BATCH
    }
}

impl Sink for Lane {
    fn entry(&mut self, entry: EntryView<'_>) {
        self.batch.entries.push((entry.index, entry.to_entry()));
        if self.full() {
            self.hand_over();
        }
    }

    fn send(&mut self, send: SendView<'_>) {
        self.batch.sends.push(send.to_send());
        if self.full() {
            self.hand_over();
        }
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        self.hand_over();
    }
}

/// Why [`run_beside`] did not finish.
#[derive(Debug)]
pub enum BesideError<E> {
    /// A thread could not be started, or the output thread panicked. (A panic in an
    /// engine or in reading goes on to the caller, the sink dropped without `close`.)
    Thread(io::Error),
    /// The sink could not be opened or closed.
    Sink(E),
}

/// Runs `model` over `records` up to `now` (entries from `from` on, as
/// [`engine::run_into`]) with `engines` engines side by side, into the sink that `open`
/// makes on a thread of its own; `close` ends it there. Returns what `close` returned and
/// the number of evaluations that ran out of fuel.
///
/// When `open` fails, no record is read and its error is returned. When an engine fails
/// (or reading panics), the sink is dropped without `close`: a tick's transaction is
/// rolled back rather than committed half done.
pub fn run_beside<S, T, E>(
    model: &Model,
    records: impl Iterator<Item = Record>,
    from: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    engines: usize,
    open: impl FnOnce() -> Result<S, E> + std::marker::Send,
    close: impl FnOnce(S) -> Result<T, E> + std::marker::Send,
) -> Result<(T, u64), BesideError<E>>
where
    S: Sink,
    T: std::marker::Send,
    E: std::marker::Send,
{
    std::thread::scope(|scope| {
        let (batches, received) = sync_channel::<Batch>(BATCHES_AHEAD);
        let (opened, is_open) = sync_channel::<bool>(1);
        // Whether the engines got through: only then is the sink closed. A verdict never
        // sent (the reading thread unwinds) counts as no.
        let (verdict, engines_done) = sync_channel::<bool>(1);
        let writer = std::thread::Builder::new()
            .name("moments-output".to_string())
            .spawn_scoped(scope, move || {
                let sink = open();
                let _ = opened.send(sink.is_ok());
                let mut sink = sink?;
                feed(received, &mut sink);
                match engines_done.recv() {
                    Ok(true) => close(sink).map(Some),
                    _ => Ok(None),
                }
            })
            .map_err(BesideError::Thread)?;
        let panicked = || BesideError::Thread(io::Error::other("the output thread panicked"));
        let ended = || BesideError::Thread(io::Error::other("the output thread ended early"));
        if !is_open.recv().unwrap_or(false) {
            drop(batches);
            return match writer.join().map_err(|_| panicked())? {
                Err(e) => Err(BesideError::Sink(e)),
                Ok(_) => Err(ended()),
            };
        }
        let mut lanes: Vec<Lane> = (0..engines.max(1))
            .map(|_| Lane {
                batch: Batch::default(),
                batches: batches.clone(),
            })
            .collect();
        drop(batches);
        let sinks = lanes
            .iter_mut()
            .map(|lane| lane as &mut (dyn Sink + std::marker::Send))
            .collect();
        let ran = engine::run_partitioned(model, records, from, now, sinks);
        // What the lanes hold goes over; then the sink's channel ends.
        drop(lanes);
        let _ = verdict.send(ran.is_ok());
        let closed = writer.join().map_err(|_| panicked())?;
        let out_of_fuel = ran.map_err(BesideError::Thread)?;
        match closed {
            Ok(Some(t)) => Ok((t, out_of_fuel)),
            Ok(None) => Err(ended()),
            Err(e) => Err(BesideError::Sink(e)),
        }
    })
}

/// Gives `sink` every batch, each lane's in the order it was handed over.
fn feed(batches: Receiver<Batch>, sink: &mut impl Sink) {
    for batch in batches {
        for (index, entry) in &batch.entries {
            sink.entry(entry.view(*index));
        }
        for send in &batch.sends {
            sink.send(send.view());
        }
    }
}
