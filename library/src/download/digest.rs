//! Hashing bytes while they stream past, on another core.
//!
//! An image is hashed in the same pass that unpacks it. Hashing on the
//! unpacking thread would add its time to the unpacking's; here the bytes
//! are copied into large chunks and hashed by a worker thread, so the two
//! overlap and the import takes about as long as the slower of them.

use std::io::{self, Read};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::{self, JoinHandle};

use sha2::digest::Digest;

/// Bytes handed to the worker at a time: large enough that the hand-over
/// costs nothing next to the hashing, small enough to stay in cache.
const CHUNK: usize = 1 << 20;
/// Chunks in flight: the reader runs at most this far ahead of the worker.
const IN_FLIGHT: usize = 4;

/// Lowercase hex of a digest.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// A hash computed by a worker thread from chunks sent to it.
#[derive(Debug)]
pub struct BackgroundHash {
    pending: Vec<u8>,
    full: Option<SyncSender<Vec<u8>>>,
    empty: Receiver<Vec<u8>>,
    worker: Option<JoinHandle<Vec<u8>>>,
    total: u64,
}

impl BackgroundHash {
    pub fn new<D: Digest + Send + 'static>() -> BackgroundHash {
        let (full, chunks) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT);
        let (recycle, empty) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT + 1);
        let worker = thread::spawn(move || {
            let mut hash = D::new();
            for chunk in chunks {
                hash.update(&chunk);
                // The reader may have finished and stopped taking buffers back.
                let _ = recycle.try_send(chunk);
            }
            hash.finalize().to_vec()
        });
        BackgroundHash {
            pending: Vec::with_capacity(CHUNK),
            full: Some(full),
            empty,
            worker: Some(worker),
            total: 0,
        }
    }

    pub fn update(&mut self, mut bytes: &[u8]) {
        self.total += bytes.len() as u64;
        while !bytes.is_empty() {
            let room = CHUNK - self.pending.len();
            let (now, rest) = bytes.split_at(room.min(bytes.len()));
            self.pending.extend_from_slice(now);
            bytes = rest;
            if self.pending.len() == CHUNK {
                self.send();
            }
        }
    }

    fn send(&mut self) {
        let next = self
            .empty
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(CHUNK));
        let chunk = std::mem::replace(&mut self.pending, next);
        if let Some(full) = &self.full {
            // The worker only stops when `full` is dropped, so this succeeds.
            let _ = full.send(chunk);
        }
        self.pending.clear();
    }

    /// Bytes hashed so far.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The digest, in lowercase hex.
    pub fn finish(mut self) -> String {
        if !self.pending.is_empty() {
            self.send();
        }
        drop(self.full.take());
        let worker = self.worker.take().expect("finish runs once");
        hex(&worker.join().expect("the hashing thread does not panic"))
    }
}

impl Drop for BackgroundHash {
    fn drop(&mut self) {
        drop(self.full.take());
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// A reader that hashes what is read through it, in the background.
#[derive(Debug)]
pub struct HashingReader<R> {
    inner: R,
    hash: BackgroundHash,
}

impl<R: Read> HashingReader<R> {
    pub fn new<D: Digest + Send + 'static>(inner: R) -> Self {
        HashingReader {
            inner,
            hash: BackgroundHash::new::<D>(),
        }
    }

    /// Read what is left (a tar reader stops at its end marker, but the
    /// digest is of every byte), then return the digest and the byte count.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let total = self.hash.total();
        Ok((self.hash.finish(), total))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        Ok(n)
    }
}

/// The most bytes read after a tar archive's end (its padding, a
/// compressed stream's last blocks): tar's largest usual blocking factor
/// pads a few MiB at most.
pub const TAIL_LIMIT: u64 = 16 << 20;

/// Read what follows a tar archive's end, refused past [`TAIL_LIMIT`]:
/// every reader of a tar (download, import, extraction, identification,
/// survey) bounds it alike, so none accepts what another refuses.
pub fn read_tail(reader: &mut impl Read) -> io::Result<u64> {
    let tail = io::copy(&mut reader.take(TAIL_LIMIT + 1), &mut io::sink())?;
    if tail > TAIL_LIMIT {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "more than {} MiB follow the end of the tar archive",
                TAIL_LIMIT >> 20
            ),
        ));
    }
    Ok(tail)
}

/// A reader fed by another thread that reads (and decompresses) the source
/// and hashes it: the thread that unpacks does nothing but unpack.
#[derive(Debug)]
pub struct PrefetchingReader {
    chunks: Receiver<io::Result<Vec<u8>>>,
    recycle: SyncSender<Vec<u8>>,
    current: Vec<u8>,
    at: usize,
    worker: Option<JoinHandle<(Option<String>, u64)>>,
}

impl PrefetchingReader {
    /// Read `source` ahead on a thread, hashing it with `D` when given.
    pub fn new<D: Digest + Send + 'static>(
        mut source: Box<dyn Read + Send>,
        hashed: bool,
    ) -> PrefetchingReader {
        let (sender, chunks) = mpsc::sync_channel::<io::Result<Vec<u8>>>(IN_FLIGHT);
        let (recycle, empty) = mpsc::sync_channel::<Vec<u8>>(IN_FLIGHT + 2);
        let worker = thread::spawn(move || {
            let mut hash = hashed.then(D::new);
            let mut total = 0u64;
            loop {
                let mut buf = empty.try_recv().unwrap_or_default();
                buf.resize(CHUNK, 0);
                let mut filled = 0;
                while filled < CHUNK {
                    match source.read(&mut buf[filled..]) {
                        Ok(0) => break,
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = sender.send(Err(e));
                            return (None, total);
                        }
                    }
                }
                buf.truncate(filled);
                if let Some(hash) = &mut hash {
                    hash.update(&buf);
                }
                total += filled as u64;
                // A receiver that went away has stopped reading: so do we.
                if filled == 0 || sender.send(Ok(buf)).is_err() || filled < CHUNK {
                    break;
                }
            }
            (hash.map(|h| hex(&h.finalize())), total)
        });
        PrefetchingReader {
            chunks,
            recycle,
            current: Vec::new(),
            at: 0,
            worker: Some(worker),
        }
    }

    /// Read what is left (what follows the tar archive's end), then
    /// return the digest (if hashed) and the byte count. What is left is
    /// bounded by [`TAIL_LIMIT`]: a tar's padding is a few KiB, and a
    /// stream that goes on without end (a server sending zeros for ever)
    /// must be refused, not read until the timeout.
    pub fn finish(mut self) -> io::Result<(Option<String>, u64)> {
        read_tail(&mut self)?;
        let worker = self.worker.take().expect("finish runs once");
        Ok(worker.join().expect("the reading thread does not panic"))
    }
}

impl Read for PrefetchingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.current.len() {
            let used = std::mem::take(&mut self.current);
            if used.capacity() > 0 {
                let _ = self.recycle.try_send(used);
            }
            self.at = 0;
            match self.chunks.recv() {
                Ok(Ok(chunk)) => self.current = chunk,
                Ok(Err(e)) => return Err(e),
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.at);
        buf[..n].copy_from_slice(&self.current[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl Drop for PrefetchingReader {
    fn drop(&mut self) {
        // Unblock the reading thread (it stops when its sends fail).
        let (_, dead) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.chunks, dead));
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::Sha512;

    #[test]
    fn the_background_hash_equals_the_plain_one_across_chunk_borders() {
        let data: Vec<u8> = (0..(3 * CHUNK + 12345))
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let mut reader = HashingReader::new::<Sha512>(&data[..]);
        let mut first = vec![0; 1000];
        reader.read_exact(&mut first).unwrap();
        let (digest, total) = reader.finish().unwrap();
        assert_eq!(digest, hex(&Sha512::digest(&data)));
        assert_eq!(total, data.len() as u64);
    }

    #[test]
    fn the_prefetching_reader_hands_over_every_byte_and_hashes_them() {
        let data: Vec<u8> = (0..(2 * CHUNK + 777))
            .map(|i| (i * 13 % 253) as u8)
            .collect();
        let mut reader =
            PrefetchingReader::new::<Sha512>(Box::new(io::Cursor::new(data.clone())), true);
        let mut first = vec![0; 3000];
        reader.read_exact(&mut first).unwrap();
        assert_eq!(first, data[..3000]);
        let (digest, total) = reader.finish().unwrap();
        assert_eq!(digest.unwrap(), hex(&Sha512::digest(&data)));
        assert_eq!(total, data.len() as u64);
        // Dropped half-way, the reading thread stops.
        let mut partial = PrefetchingReader::new::<Sha512>(Box::new(io::Cursor::new(data)), false);
        partial.read_exact(&mut first).unwrap();
        drop(partial);
    }

    #[test]
    fn what_follows_the_archive_is_read_up_to_a_bound_not_for_ever() {
        let just = io::repeat(0).take(TAIL_LIMIT);
        let reader = PrefetchingReader::new::<Sha512>(Box::new(just), false);
        assert_eq!(reader.finish().unwrap().1, TAIL_LIMIT);
        let endless = PrefetchingReader::new::<Sha512>(Box::new(io::repeat(0)), false);
        let err = endless.finish().unwrap_err();
        assert_eq!(
            err.to_string(),
            "more than 16 MiB follow the end of the tar archive"
        );
    }
}
