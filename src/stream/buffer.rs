//! The shared linked buffer: fixed-size chunks of entries in a [`Slab`], linked from the oldest
//! (`head`) to the newest (`tail`).
//!
//! Every message is stored once. Each reader holds a [`Cursor`]: the sequence number of the next
//! entry it will read and the chunk that holds it. A chunk counts the cursors inside it; the head
//! chunk is freed as soon as no cursor is left in it, so memory is held only by the slowest
//! reader. Chunking keeps the cost per buffered message at `size_of::<Entry<T>>()` plus a small
//! share of one chunk header (one node per message would cost a header per message).

use alloc::boxed::Box;
use alloc::vec::Vec;
use slab::Slab;

use super::ConsumerId;

/// Entries per chunk.
pub(crate) const CHUNK: usize = 64;

/// One buffered entry. Plain values are stored inline; the rare special entries (targeted writes,
/// close packets) are boxed so that they do not widen every slot.
pub(crate) enum Entry<T> {
    /// A value for every consumer.
    Value(T),
    /// A targeted value or a close packet.
    Special(Box<Special<T>>),
}

/// The rare entries.
pub(crate) enum Special<T> {
    /// A value for one consumer only (`write_to_consumer`).
    To(ConsumerId, T),
    /// Ends every consumer that reaches it (`close`).
    Close(Option<T>),
    /// Ends one consumer when it reaches it (`close_consumer`).
    CloseConsumer(ConsumerId, Option<T>),
}

struct Chunk<T> {
    /// Sequence number of `entries[0]`.
    start: u64,
    entries: Vec<Entry<T>>,
    next: Option<usize>,
    /// Cursors currently inside this chunk.
    readers: usize,
}

/// A reader's position in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// Slab key of the chunk that holds (or, at the very end of a full chunk, precedes) `pos`.
    chunk: usize,
    /// Sequence number of the next entry to read.
    pub(crate) pos: u64,
}

/// Chunks freed under the lock, to be dropped after it is released: dropping an entry runs user
/// code (a value's `Drop`), which may even drop the stream's last handle, and that locks again.
pub(crate) struct Graveyard<T>(#[allow(dead_code, reason = "held only to be dropped later")] Vec<Chunk<T>>);

/// The buffer. All methods run under the stream's lock.
pub(crate) struct Buffer<T> {
    chunks: Slab<Chunk<T>>,
    /// Freed chunks not yet dropped (see [`Graveyard`]).
    graveyard: Vec<Chunk<T>>,
    head: Option<usize>,
    tail: Option<usize>,
    /// Sequence number the next pushed entry gets.
    end: u64,
}

impl<T> Buffer<T> {
    pub(crate) const fn new() -> Self {
        Self { chunks: Slab::new(), graveyard: Vec::new(), head: None, tail: None, end: 0 }
    }

    /// Takes the freed chunks, for the caller to drop once the lock is released.
    pub(crate) fn take_graveyard(&mut self) -> Graveyard<T> {
        Graveyard(core::mem::take(&mut self.graveyard))
    }

    /// Whether freed chunks wait to be dropped.
    pub(crate) fn has_graveyard(&self) -> bool {
        !self.graveyard.is_empty()
    }

    /// Sequence number the next pushed entry gets.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Sequence number of the oldest entry still stored (`end()` when nothing is stored).
    pub(crate) fn start(&self) -> u64 {
        self.head.map_or(self.end, |h| self.chunks[h].start)
    }

    /// Chunks stored and the slab's capacity (for tests of memory release).
    #[cfg(test)]
    pub(crate) fn chunk_stats(&self) -> (usize, usize) {
        (self.chunks.len(), self.chunks.capacity())
    }

    /// A new cursor at the end of the buffer: it will read every entry pushed from now on.
    pub(crate) fn cursor_at_end(&mut self) -> Cursor {
        let chunk = match self.tail {
            Some(t) => t,
            None => self.new_chunk(),
        };
        self.chunks[chunk].readers += 1;
        Cursor { chunk, pos: self.end }
    }

    fn new_chunk(&mut self) -> usize {
        // No capacity yet: a stream that gets consumers but no writes (most of a socket's
        // receivers and procedures) allocates no entries; the first push reserves a full chunk.
        if self.chunks.capacity() == 0 {
            self.chunks.reserve_exact(1); // most streams never need a second chunk
        }
        let key = self.chunks.insert(Chunk { start: self.end, entries: Vec::new(), next: None, readers: 0 });
        match self.tail {
            Some(t) => self.chunks[t].next = Some(key),
            None => self.head = Some(key),
        }
        self.tail = Some(key);
        key
    }

    /// Appends an entry. The caller only pushes while at least one cursor exists.
    pub(crate) fn push(&mut self, entry: Entry<T>) {
        let tail = match self.tail {
            Some(t) if self.chunks[t].entries.len() < CHUNK => t,
            _ => self.new_chunk(),
        };
        let entries = &mut self.chunks[tail].entries;
        if entries.capacity() == 0 {
            entries.reserve_exact(CHUNK);
        }
        entries.push(entry);
        self.end += 1;
    }

    /// The entries from `cursor` to the end of its chunk (empty when the cursor has read
    /// everything). Steps the cursor into the next chunk when it stands at the end of a full one,
    /// freeing chunks nobody reads. The caller reads a prefix and moves `cursor.pos` past it.
    #[inline]
    pub(crate) fn readable(&mut self, cursor: &mut Cursor) -> &[Entry<T>] {
        let chunk = &self.chunks[cursor.chunk];
        let idx = (cursor.pos - chunk.start) as usize;
        if idx == CHUNK
            && let Some(next) = chunk.next
        {
            // At the end of a full chunk with a successor: step into it.
            self.chunks[next].readers += 1;
            self.leave(cursor.chunk);
            cursor.chunk = next;
            return &self.chunks[next].entries;
        }
        &self.chunks[cursor.chunk].entries[idx..]
    }

    /// The cursor's reader is gone: release its hold on the buffer.
    pub(crate) fn release(&mut self, cursor: Cursor) {
        self.leave(cursor.chunk);
    }

    fn leave(&mut self, chunk: usize) {
        self.chunks[chunk].readers -= 1;
        // Free the head chunks no cursor stands in. A chunk after the head may be empty of
        // readers while an older one is not; it waits until the head reaches it.
        while let Some(h) = self.head {
            let c = &self.chunks[h];
            if c.readers > 0 {
                break;
            }
            match c.next {
                Some(next) => {
                    let freed = self.chunks.remove(h);
                    self.graveyard.push(freed);
                    self.head = Some(next);
                }
                None => {
                    // The tail chunk with no reader left: nobody reads the buffer at all.
                    self.graveyard.extend(self.chunks.drain());
                    self.head = None;
                    self.tail = None;
                }
            }
        }
    }

    /// Returns the slab's spare capacity once a large backlog is gone. Vacant slab entries are the
    /// size of a chunk header, so a drained backlog of a million messages would otherwise keep
    /// ~15 000 headers around. When at most two chunks are live the slab is rebuilt around them;
    /// the returned [`Remap`] must then be applied to every live cursor.
    #[must_use]
    pub(crate) fn compact(&mut self) -> Option<Remap> {
        if self.chunks.is_empty() {
            if self.chunks.capacity() > 4 {
                self.chunks = Slab::new();
            }
            return None;
        }
        if self.chunks.len() > 2 || self.chunks.capacity() <= 32 {
            return None;
        }
        let mut fresh = Slab::with_capacity(4);
        let mut remap = Remap { moves: [(usize::MAX, usize::MAX); 2] };
        let mut prev: Option<usize> = None;
        let mut at = self.head;
        let mut n = 0;
        while let Some(old) = at {
            let chunk = self.chunks.remove(old);
            at = chunk.next;
            let new = fresh.insert(chunk);
            fresh[new].next = None;
            if let Some(p) = prev {
                fresh[p].next = Some(new);
            } else {
                self.head = Some(new);
            }
            prev = Some(new);
            remap.moves[n] = (old, new);
            n += 1;
        }
        self.tail = prev;
        self.chunks = fresh;
        Some(remap)
    }
}

/// Where [`Buffer::compact`] moved the live chunks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Remap {
    moves: [(usize, usize); 2],
}

impl Remap {
    /// Points a cursor at its chunk's new key.
    pub(crate) fn apply(&self, cursor: &mut Cursor) {
        for &(old, new) in &self.moves {
            if cursor.chunk == old {
                cursor.chunk = new;
                return;
            }
        }
    }
}
