//! Files written past the kernel's page cache, where the system allows it (`O_DIRECT` on
//! Linux), and through it everywhere else.
//!
//! A large backtest writes gigabytes once. Through the page cache, every byte is first
//! copied into pages the kernel takes from free memory, and on a virtual machine that
//! returns free memory to its host, taking those pages back costs more CPU than the engines
//! spend producing the bytes. Direct I/O moves the bytes from this module's own buffer,
//! which is reused, to the disk.
//!
//! Direct I/O wants whole blocks at block-aligned offsets from block-aligned memory. The
//! writer below writes whole [`BLOCK`]s that way, and the partial block at the end of the
//! file through the page cache. Where a direct write is refused, it goes on through the
//! page cache: same bytes, only slower.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

/// The alignment of direct I/O: of file offsets, lengths and memory. A multiple of the
/// block sizes in use (512 and 4096 bytes) and of the memory pages (4 KiB to 64 KiB).
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

/// `path` opened for direct writes, or `None` where it cannot be.
#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    File::options()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<File> {
    None
}

#[cfg(unix)]
fn write_all_at(file: &File, bytes: &[u8], at: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, bytes, at)
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

/// Whether a direct write failed because the file or its system does not take direct I/O
/// (rather than for a reason that plain I/O would meet too).
fn refused(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::InvalidInput
}

/// Moves the file at `path`, if there is one, to a hidden name beside it, and returns that
/// name: the caller removes it when it likes. Emptying a large file in place (as creating
/// it anew does) makes the file system free its blocks there and then, which took a
/// noticeable part of a large backtest's start; moved aside, they are freed on another
/// thread while the new file is written. `None` when there was no file or it could not be
/// moved (then creating the new one empties it as usual).
pub fn set_aside(path: &Path) -> Option<std::path::PathBuf> {
    let name = path.file_name()?.to_str()?;
    let aside = path.with_file_name(format!(".{name}.old"));
    std::fs::rename(path, &aside).ok()?;
    Some(aside)
}

/// Writes a new file from its start, in order: whole aligned blocks directly, the partial
/// block at the end through the page cache. Call [`BlockWriter::finish`] at the end:
/// dropping it unfinished loses what it still holds.
pub struct BlockWriter {
    plain: File,
    direct: Option<File>,
    buffer: AlignedBuffer,
    /// The file offset of `buffer`'s first byte; `BLOCK`-aligned.
    base: u64,
    /// The bytes in the buffer.
    len: usize,
}

impl BlockWriter {
    /// A new file at `path` (emptied if it exists), with a buffer of `buffer` bytes.
    pub fn create(path: &Path, buffer: usize) -> io::Result<BlockWriter> {
        let plain = File::create(path)?;
        Ok(BlockWriter::new(plain, open_direct(path), buffer))
    }

    fn new(plain: File, direct: Option<File>, buffer: usize) -> BlockWriter {
        BlockWriter {
            plain,
            direct,
            buffer: AlignedBuffer::new(buffer.max(BLOCK)),
            base: 0,
            len: 0,
        }
    }

    /// Write out the buffer's whole blocks directly, and the partial block after them
    /// through the page cache when `all`; the buffer is emptied of what was written.
    fn write_out(&mut self, all: bool) -> io::Result<()> {
        let whole = self.len / BLOCK * BLOCK;
        if whole > 0 {
            let blocks = &self.buffer.as_slice()[..whole];
            let direct = match &self.direct {
                Some(direct) => write_all_at(direct, blocks, self.base),
                None => write_all_at(&self.plain, blocks, self.base),
            };
            match direct {
                Ok(()) => {}
                Err(e) if self.direct.is_some() && refused(&e) => {
                    self.direct = None;
                    write_all_at(&self.plain, blocks, self.base)?;
                }
                Err(e) => return Err(e),
            }
            self.buffer.as_mut_slice().copy_within(whole..self.len, 0);
            self.base += whole as u64;
            self.len -= whole;
        }
        if all && self.len > 0 {
            write_all_at(&self.plain, &self.buffer.as_slice()[..self.len], self.base)?;
            self.base += self.len as u64;
            self.len = 0;
        }
        Ok(())
    }

    /// Write out everything.
    pub fn finish(mut self) -> io::Result<()> {
        self.write_out(true)
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
                self.write_out(false)?;
            }
        }
        Ok(())
    }

    /// Whole blocks only: the partial one at the end waits for more bytes or for
    /// [`BlockWriter::finish`].
    fn flush(&mut self) -> io::Result<()> {
        self.write_out(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn writes_any_length_in_any_pieces() {
        let dir = std::env::temp_dir().join(format!("moments-direct-io-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("file");
        for direct in [true, false] {
            for len in [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 7 * BLOCK + 13] {
                for piece in [1, 1000, 5 * BLOCK] {
                    // Something longer first: the file is emptied.
                    std::fs::write(&path, vec![b'-'; 9 * BLOCK]).unwrap();
                    let mut writer = BlockWriter::create(&path, 3 * BLOCK).unwrap();
                    if !direct {
                        writer.direct = None;
                    }
                    let data = bytes(len);
                    for chunk in data.chunks(piece) {
                        writer.write_all(chunk).unwrap();
                    }
                    writer.flush().unwrap();
                    writer.finish().unwrap();
                    assert_eq!(std::fs::read(&path).unwrap(), data, "{len} in {piece}s");
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
