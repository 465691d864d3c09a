//! Files written and read past the kernel's page cache, where the system allows it
//! (`O_DIRECT` on Linux), and through it everywhere else.
//!
//! A large backtest writes gigabytes once (its sorted runs, then its files) and reads the
//! runs back once. Through the page cache, every byte is first copied into pages the kernel
//! takes from free memory, and on a virtual machine that returns free memory to its host,
//! taking those pages back costs more CPU than the engines spend producing the bytes.
//! Direct I/O moves the bytes between the disk and this module's own buffers, which are
//! reused.
//!
//! Direct I/O wants whole blocks at block-aligned offsets from block-aligned memory. The
//! writer and reader below keep to that with [`BLOCK`]-sized blocks, and write the
//! partial blocks at either end of what they write (a stretch that starts or ends inside
//! a block) through the page cache. Where a direct read or write is refused, they go on
//! through the page cache: same bytes, only slower.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

/// The alignment of direct I/O: of file offsets, lengths and memory. A multiple of the
/// block sizes in use (512 and 4096 bytes) and of the memory pages (4 KiB to 64 KiB):
/// a page the cache holds for a partial block is never one that a direct write covers,
/// so writers of neighbouring stretches do not collide in the cache.
pub const BLOCK: usize = 64 << 10;

/// A buffer whose stretch `[0, len)` starts at a `BLOCK`-aligned address.
struct AlignedBuffer {
    bytes: Vec<u8>,
    /// Where the aligned stretch starts in `bytes`.
    start: usize,
    len: usize,
}

impl AlignedBuffer {
    /// `len` is rounded up to whole blocks.
    fn new(len: usize) -> AlignedBuffer {
        let len = len.max(1).div_ceil(BLOCK) * BLOCK;
        let bytes = vec![0u8; len + BLOCK];
        let start = bytes.as_ptr().align_offset(BLOCK).min(BLOCK);
        AlignedBuffer { bytes, start, len }
    }

    fn as_slice(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

/// `path` opened for direct I/O (`write` or read), or `None` where it cannot be.
#[cfg(target_os = "linux")]
fn open_direct(path: &Path, write: bool) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .read(!write)
        .write(write)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path, _write: bool) -> Option<File> {
    None
}

#[cfg(unix)]
fn write_all_at(file: &File, bytes: &[u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, at)
}

#[cfg(unix)]
fn read_at(file: &File, bytes: &mut [u8], at: u64) -> io::Result<usize> {
    std::os::unix::fs::FileExt::read_at(file, bytes, at)
}

#[cfg(windows)]
fn write_all_at(file: &File, mut bytes: &[u8], mut at: u64) -> io::Result<()> {
    while !bytes.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, bytes, at)?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        bytes = &bytes[n..];
        at += n as u64;
    }
    Ok(())
}

#[cfg(windows)]
fn read_at(file: &File, bytes: &mut [u8], at: u64) -> io::Result<usize> {
    std::os::windows::fs::FileExt::seek_read(file, bytes, at)
}

/// Whether a direct read or write failed because the file or its system does not take
/// direct I/O (rather than for a reason that plain I/O would meet too).
fn refused(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidInput
}

/// Writes bytes to a file from an offset on, in order: whole aligned blocks directly, the
/// partial blocks at either end through the page cache. Call [`BlockWriter::finish`] at the
/// end: dropping it unfinished loses what it still holds.
pub struct BlockWriter {
    plain: File,
    direct: Option<File>,
    buffer: AlignedBuffer,
    /// The file offset of `buffer`'s first byte; `BLOCK`-aligned.
    base: u64,
    /// The buffer's first bytes that are not to be written (the file offset the writer
    /// started at lies inside the first block).
    skip: usize,
    /// The bytes in the buffer, `skip` included.
    len: usize,
}

impl BlockWriter {
    /// A new file at `path` (emptied if it exists), written from its start, with a buffer
    /// of `buffer` bytes.
    pub fn create(path: &Path, buffer: usize) -> io::Result<BlockWriter> {
        let plain = File::create(path)?;
        Ok(BlockWriter::new(plain, open_direct(path, true), 0, buffer))
    }

    /// The existing file at `path`, written from `offset` on, with a buffer of `buffer`
    /// bytes.
    pub fn at(path: &Path, offset: u64, buffer: usize) -> io::Result<BlockWriter> {
        let plain = File::options().write(true).open(path)?;
        Ok(BlockWriter::new(
            plain,
            open_direct(path, true),
            offset,
            buffer,
        ))
    }

    /// Written through the page cache only (as where direct I/O is refused).
    pub fn plain(path: &Path, offset: u64, buffer: usize) -> io::Result<BlockWriter> {
        let plain = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        Ok(BlockWriter::new(plain, None, offset, buffer))
    }

    fn new(plain: File, direct: Option<File>, offset: u64, buffer: usize) -> BlockWriter {
        let skip = (offset % BLOCK as u64) as usize;
        BlockWriter {
            plain,
            direct,
            buffer: AlignedBuffer::new(buffer.max(2 * BLOCK)),
            base: offset - skip as u64,
            skip,
            len: skip,
        }
    }

    /// Write out the buffer up to `end` (an index in it): the first block through the page
    /// cache when it starts with bytes not ours, the blocks after it directly, and a last
    /// partial block through the page cache.
    fn write_out(&mut self, end: usize) -> io::Result<()> {
        let mut from = self.skip;
        if from > 0 {
            let head_end = BLOCK.min(end);
            let head = &self.buffer.as_slice()[from..head_end];
            write_all_at(&self.plain, head, self.base + from as u64)?;
            from = head_end;
        }
        let whole_end = from.max(end / BLOCK * BLOCK);
        if whole_end > from {
            let whole = &self.buffer.as_slice()[from..whole_end];
            let at = self.base + from as u64;
            let direct = match &self.direct {
                Some(direct) => write_all_at(direct, whole, at),
                None => write_all_at(&self.plain, whole, at),
            };
            match direct {
                Ok(()) => {}
                Err(e) if self.direct.is_some() && refused(&e) => {
                    self.direct = None;
                    write_all_at(&self.plain, whole, at)?;
                }
                Err(e) => return Err(e),
            }
        }
        if end > whole_end {
            let tail = &self.buffer.as_slice()[whole_end..end];
            write_all_at(&self.plain, tail, self.base + whole_end as u64)?;
        }
        Ok(())
    }

    /// Write out the buffer's whole blocks and keep the rest, at the buffer's start.
    fn write_blocks(&mut self) -> io::Result<()> {
        let whole = self.len / BLOCK * BLOCK;
        if whole == 0 {
            return Ok(());
        }
        self.write_out(whole)?;
        self.buffer.as_mut_slice().copy_within(whole..self.len, 0);
        self.base += whole as u64;
        self.skip = 0;
        self.len -= whole;
        Ok(())
    }

    /// Write out everything.
    pub fn finish(mut self) -> io::Result<()> {
        self.write_out(self.len)
    }
}

impl Write for BlockWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.write_all(bytes)?;
        Ok(bytes.len())
    }

    fn write_all(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            let room = self.buffer.len - self.len;
            let n = room.min(bytes.len());
            self.buffer.as_mut_slice()[self.len..self.len + n].copy_from_slice(&bytes[..n]);
            self.len += n;
            bytes = &bytes[n..];
            if self.len == self.buffer.len {
                self.write_blocks()?;
            }
        }
        Ok(())
    }

    /// Whole blocks only: the partial one at the end waits for more bytes or for
    /// [`BlockWriter::finish`].
    fn flush(&mut self) -> io::Result<()> {
        self.write_blocks()
    }
}

/// Reads a stretch of a file, directly in aligned blocks where it can, into a buffer of its
/// own. It holds one open file (a merge opens every run at once).
pub struct BlockReader {
    path: PathBuf,
    file: File,
    /// Whether `file` was opened for direct I/O.
    direct: bool,
    buffer: AlignedBuffer,
    /// The file offset of `buffer`'s first byte.
    base: u64,
    /// The next byte to hand out, and the end of the bytes read, in the buffer.
    at: usize,
    len: usize,
    /// The end of the stretch, as a file offset.
    end: u64,
}

impl BlockReader {
    /// The bytes of the file at `path` from `start` up to `end` (or its end), read with a
    /// buffer of `buffer` bytes.
    pub fn range(path: &Path, start: u64, end: u64, buffer: usize) -> io::Result<BlockReader> {
        let (file, direct) = match open_direct(path, false) {
            Some(file) => (file, true),
            None => (File::open(path)?, false),
        };
        Ok(BlockReader {
            path: path.to_path_buf(),
            file,
            direct,
            buffer: AlignedBuffer::new(buffer),
            base: start,
            at: 0,
            len: 0,
            end,
        })
    }

    /// Read the blocks from the next byte to hand out on; `false` at the end.
    fn fill(&mut self) -> io::Result<bool> {
        let next = self.base + self.at as u64;
        if next >= self.end {
            return Ok(false);
        }
        let base = next / BLOCK as u64 * BLOCK as u64;
        let skip = (next - base) as usize;
        let want = (self.end - base).min(self.buffer.len as u64) as usize;
        let read = if self.direct {
            // A whole number of blocks: the file's end may cut it short.
            let whole = want.div_ceil(BLOCK) * BLOCK;
            match read_at(&self.file, &mut self.buffer.as_mut_slice()[..whole], base) {
                Ok(n) => Ok(n.min(want)),
                Err(e) if refused(&e) => {
                    self.file = File::open(&self.path)?;
                    self.direct = false;
                    read_at(&self.file, &mut self.buffer.as_mut_slice()[..want], base)
                }
                Err(e) => Err(e),
            }
        } else {
            read_at(&self.file, &mut self.buffer.as_mut_slice()[..want], base)
        }?;
        self.base = base;
        self.at = skip;
        self.len = read.max(skip);
        Ok(read > skip)
    }
}

impl Read for BlockReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.at == self.len && !self.fill()? {
            return Ok(0);
        }
        let n = out.len().min(self.len - self.at);
        out[..n].copy_from_slice(&self.buffer.as_slice()[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    /// Writes `data` in pieces of `piece` bytes from `offset` into a file that already has
    /// `offset` bytes of `b'-'`, and reads it back from `offset`.
    fn round_trip(data: &[u8], offset: usize, piece: usize, direct: bool) {
        let dir = std::env::temp_dir().join(format!(
            "moments-direct-io-{}-{offset}-{piece}-{direct}-{}",
            std::process::id(),
            data.len()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file");
        std::fs::write(&path, vec![b'-'; offset]).unwrap();
        let mut writer = if direct {
            BlockWriter::at(&path, offset as u64, 3 * BLOCK).unwrap()
        } else {
            BlockWriter::plain(&path, offset as u64, 3 * BLOCK).unwrap()
        };
        for chunk in data.chunks(piece.max(1)) {
            writer.write_all(chunk).unwrap();
        }
        writer.finish().unwrap();
        let written = std::fs::read(&path).unwrap();
        assert_eq!(written.len(), offset + data.len());
        assert!(written[..offset].iter().all(|&b| b == b'-'));
        assert_eq!(&written[offset..], data);
        let stretches = [
            (offset, written.len()),
            (offset + 1, written.len().saturating_sub(1)),
        ];
        for (start, end) in stretches.into_iter().filter(|(start, end)| start <= end) {
            let mut reader = BlockReader::range(&path, start as u64, end as u64, BLOCK).unwrap();
            let mut back = Vec::new();
            reader.read_to_end(&mut back).unwrap();
            assert_eq!(back, &written[start..end], "read from {start} to {end}");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn writes_and_reads_back_any_stretch() {
        for direct in [true, false] {
            for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 7 * BLOCK + 13] {
                for offset in [0, 1, BLOCK - 1, BLOCK, 2 * BLOCK + 100] {
                    for piece in [1, 1000, 5 * BLOCK] {
                        round_trip(&bytes(len), offset, piece, direct);
                    }
                }
            }
        }
    }

    #[test]
    fn two_writers_fill_one_file_at_once() {
        let dir =
            std::env::temp_dir().join(format!("moments-direct-io-two-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file");
        let data = bytes(10 * BLOCK + 77);
        let split = 4 * BLOCK + 1234;
        let mut first = BlockWriter::create(&path, 2 * BLOCK).unwrap();
        let mut second = BlockWriter::at(&path, split as u64, 2 * BLOCK).unwrap();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                for chunk in data[split..].chunks(999) {
                    second.write_all(chunk).unwrap();
                }
                second.finish().unwrap();
            });
            for chunk in data[..split].chunks(333) {
                first.write_all(chunk).unwrap();
            }
            first.finish().unwrap();
        });
        assert_eq!(std::fs::read(&path).unwrap(), data);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
