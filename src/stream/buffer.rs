//! The shared linked buffer: fixed-size chunks of entries in a [`Slab`], linked from the oldest
//! (`head`) to the newest (`tail`).
//!
//! Every message is stored once. Each reader holds a [`Cursor`]: the sequence number of the next
//! entry it will read and the chunk that holds it. A chunk counts the cursors inside it, and how
//! many stand at each of its entries; the head chunk is freed as soon as no cursor is left in it,
//! so memory is held only by the slowest reader. Within the head chunk, a value is released as
//! soon as the last cursor passes it: the last reader moves it out instead of cloning it, and
//! whatever a departing reader leaves behind that nobody else will read is dropped. Chunking keeps
//! the cost per buffered message at `size_of::<Entry<T>>()` plus a small share of one chunk header
//! and its per-entry cursor counts (one node per message would cost a header per message).

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
    /// Released: every cursor has passed it (only ever before the head chunk's slowest cursor).
    Gone,
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

/// Cursors standing at each index of a chunk: `[i]` counts those whose next entry is `entries[i]`,
/// `[CHUNK]` those at the very end of a full chunk.
type AtCounts = [u32; CHUNK + 1];

struct Chunk<T> {
    /// Sequence number of `entries[0]`.
    start: u64,
    entries: Vec<Entry<T>>,
    /// Where the cursors inside stand, allocated with the entries. Before that every cursor of
    /// the chunk stands at index 0 (a chunk gets entries before any cursor can move in it).
    at: Option<Box<AtCounts>>,
    next: Option<usize>,
    /// Cursors currently inside this chunk.
    readers: u32,
    /// In the head chunk: the entries before `low` were released, and `low` is the index of the
    /// slowest cursor in the chunk. Elsewhere 0.
    low: usize,
}

impl<T> Chunk<T> {
    fn new(start: u64) -> Self {
        Self { start, entries: Vec::new(), at: None, next: None, readers: 0, low: 0 }
    }

    fn idx(&self, pos: u64) -> usize {
        (pos - self.start) as usize
    }

    /// Counts a cursor arriving at index `i`.
    fn arrive(&mut self, i: usize) {
        self.readers += 1;
        if let Some(at) = &mut self.at {
            at[i] += 1;
        }
    }

    /// Counts a cursor leaving index `i`; returns whether no cursor is left at `i`.
    fn depart(&mut self, i: usize) -> bool {
        self.readers -= 1;
        match &mut self.at {
            Some(at) => {
                at[i] -= 1;
                at[i] == 0
            }
            None => self.readers == 0,
        }
    }

    /// Cursors at index `i`.
    fn cursors_at(&self, i: usize) -> u32 {
        match &self.at {
            Some(at) => at[i],
            None if i == 0 => self.readers,
            None => 0,
        }
    }

    /// In the head chunk: releases the entries from `low` up to the slowest cursor into `dead`
    /// and moves `low` there.
    fn release_passed(&mut self, dead: &mut Vec<Entry<T>>) {
        if self.readers == 0 {
            return; // the whole chunk is about to be freed
        }
        let mut low = self.low;
        while self.cursors_at(low) == 0 {
            if let Some(entry) = self.entries.get_mut(low)
                && !matches!(entry, Entry::Gone)
            {
                dead.push(core::mem::replace(entry, Entry::Gone));
            }
            low += 1;
        }
        self.low = low;
    }
}

/// A reader's position in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Cursor {
    /// Slab key of the chunk that holds (or, at the very end of a full chunk, precedes) `pos`.
    chunk: usize,
    /// Sequence number of the next entry to read.
    pub(crate) pos: u64,
}

/// Chunks and entries freed under the lock, to be dropped after it is released: dropping an entry
/// runs user code (a value's `Drop`), which may even drop the stream's last handle, and that locks
/// again.
#[allow(dead_code, reason = "held only to be dropped later")]
pub(crate) struct Graveyard<T>(Vec<Chunk<T>>, Vec<Entry<T>>);

/// The buffer. All methods run under the stream's lock.
pub(crate) struct Buffer<T> {
    chunks: Slab<Chunk<T>>,
    /// Freed chunks not yet dropped (see [`Graveyard`]).
    graveyard: Vec<Chunk<T>>,
    /// Released entries not yet dropped (see [`Graveyard`]).
    dead: Vec<Entry<T>>,
    head: Option<usize>,
    tail: Option<usize>,
    /// Sequence number the next pushed entry gets.
    end: u64,
}

impl<T> Buffer<T> {
    pub(crate) const fn new() -> Self {
        Self { chunks: Slab::new(), graveyard: Vec::new(), dead: Vec::new(), head: None, tail: None, end: 0 }
    }

    /// Takes the freed chunks, for the caller to drop once the lock is released.
    pub(crate) fn take_graveyard(&mut self) -> Graveyard<T> {
        Graveyard(core::mem::take(&mut self.graveyard), core::mem::take(&mut self.dead))
    }

    /// Whether freed chunks or entries wait to be dropped.
    pub(crate) fn has_graveyard(&self) -> bool {
        !self.graveyard.is_empty() || !self.dead.is_empty()
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
        let c = &mut self.chunks[chunk];
        let i = c.idx(self.end);
        c.arrive(i);
        Cursor { chunk, pos: self.end }
    }

    fn new_chunk(&mut self) -> usize {
        // No capacity yet: a stream that gets consumers but no writes (most of a socket's
        // receivers and procedures) allocates no entries; the first push reserves a full chunk.
        if self.chunks.capacity() == 0 {
            self.chunks.reserve_exact(1); // most streams never need a second chunk
        }
        let key = self.chunks.insert(Chunk::new(self.end));
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
        let chunk = &mut self.chunks[tail];
        if chunk.entries.capacity() == 0 {
            chunk.entries.reserve_exact(CHUNK);
            let mut at = Box::new([0; CHUNK + 1]);
            at[0] = chunk.readers; // every cursor of a chunk without entries stands at 0
            chunk.at = Some(at);
        }
        chunk.entries.push(entry);
        self.end += 1;
    }

    /// The entries from `cursor` to the end of its chunk (empty when the cursor has read
    /// everything), and how many of the first ones nobody else will read: the caller may move
    /// those out (leaving [`Entry::Gone`]) instead of cloning them. Steps the cursor into the next
    /// chunk when it stands at the end of a full one, freeing chunks nobody reads. The caller
    /// reads a prefix and then calls [`advance`](Self::advance) past it.
    #[inline]
    pub(crate) fn readable(&mut self, cursor: &mut Cursor) -> (&mut [Entry<T>], usize) {
        let chunk = &self.chunks[cursor.chunk];
        let mut idx = chunk.idx(cursor.pos);
        if idx == CHUNK
            && let Some(next) = chunk.next
        {
            // At the end of a full chunk with a successor: step into it.
            self.chunks[next].arrive(0);
            self.leave(cursor.chunk, CHUNK);
            cursor.chunk = next;
            idx = 0;
        }
        let head = self.head == Some(cursor.chunk);
        let chunk = &mut self.chunks[cursor.chunk];
        let len = chunk.entries.len();
        // Only the slowest cursor of the head chunk, alone at its index, is the last reader of
        // the entries up to the next cursor.
        let mine = if head && idx == chunk.low && chunk.cursors_at(idx) == 1 {
            (idx + 1..len).find(|&i| chunk.cursors_at(i) > 0).unwrap_or(len) - idx
        } else {
            0
        };
        (&mut chunk.entries[idx..], mine)
    }

    /// Moves `cursor` past `n` entries of its chunk (a prefix of what [`readable`](Self::readable)
    /// returned), releasing what every cursor has now passed.
    #[inline]
    pub(crate) fn advance(&mut self, cursor: &mut Cursor, n: u64) {
        if n == 0 {
            return;
        }
        let head = self.head == Some(cursor.chunk);
        let chunk = &mut self.chunks[cursor.chunk];
        let from = chunk.idx(cursor.pos);
        cursor.pos += n;
        let to = chunk.idx(cursor.pos);
        let left_empty = chunk.depart(from);
        chunk.arrive(to);
        if head && left_empty && from == chunk.low {
            chunk.release_passed(&mut self.dead);
        }
    }

    /// The cursor's reader is gone: release its hold on the buffer.
    pub(crate) fn release(&mut self, cursor: Cursor) {
        let idx = self.chunks[cursor.chunk].idx(cursor.pos);
        self.leave(cursor.chunk, idx);
    }

    /// A cursor leaves index `idx` of `chunk` (for another chunk, or for good).
    fn leave(&mut self, chunk: usize, idx: usize) {
        let c = &mut self.chunks[chunk];
        let left_empty = c.depart(idx);
        if self.head == Some(chunk) && left_empty && idx == c.low {
            c.release_passed(&mut self.dead);
        }
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
                    // The new head: release what its cursors have all passed.
                    self.chunks[next].release_passed(&mut self.dead);
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
