//! The image rendered chunk by chunk, in order, for a consumer that stores each chunk as
//! soon as it is complete (`mkfs-ext4` hands them to the store's chunk sink): no scratch
//! file, so every byte of the image is copied once, into its chunk, instead of into a
//! file and then again into the chunk.
//!
//! [`PreparedExt4::write`](super::PreparedExt4::write) writes the metadata first, then the
//! files in the order of their first block, wherever the blocks fall. Here every chunk is
//! rendered whole before the next: its metadata blocks (already in memory), then the runs
//! of file blocks that land in it. A file is read through one open reader from chunk to
//! chunk; its blocks usually ascend with its logical blocks (whole-bin pieces homed at
//! consecutive bins, the tail where they end), and where they do not (pieces that wrapped
//! round the image's end, a tail placed before them) the reader is opened again and read
//! up to the block wanted. Every file is read to its end and its length checked, as
//! [`write`](super::PreparedExt4::write) does, so a reader that verifies at the end
//! (the store's) has verified every byte it gave before the image is committed. Readers
//! stay open only between a file's first and last rendered chunk.
//!
//! The bytes are those [`write`](super::PreparedExt4::write) gives the same tree (pinned by
//! the tests below): a chunk the recipes name is [`ChunkBody::Reused`] and not rendered, a
//! chunk nothing is written into is [`ChunkBody::Zero`].

use std::collections::BTreeMap;
use std::io::{self, Read};

use super::{Body, Ext4Report, Ext4WriteError, PreparedExt4, BLOCK_SIZE};
use crate::formats::fs::Contents;
use crate::formats::io::read_full;

/// One chunk of the image, as [`PreparedExt4::write_chunks`] hands it over.
#[derive(Debug, PartialEq, Eq)]
pub enum ChunkBody {
    /// The chunk's bytes.
    Data(Vec<u8>),
    /// Nothing is written into the chunk: `len` zero bytes.
    Zero { len: u64 },
    /// The chunk whose recipe (`DataChunks::recipes`) `reuse` said the caller knows; not
    /// rendered, its files not read for it.
    Reused { len: u64, recipe: [u8; 32] },
}

/// Where [`PreparedExt4::write_chunks`] hands the image, one chunk at a time, in order
/// from chunk 0.
pub trait ChunkOut {
    /// A buffer of `len` zero bytes for the next chunk; the default allocates one, a
    /// consumer that keeps the buffers it was given hands them back here.
    fn buffer(&mut self, len: usize) -> Vec<u8> {
        vec![0; len]
    }

    /// Chunk number `chunk` (its offset over the chunk size).
    fn chunk(&mut self, chunk: u64, body: ChunkBody) -> io::Result<()>;
}

/// A file being read from chunk to chunk.
struct Open<'c> {
    reader: Box<dyn Read + 'c>,
    /// Bytes read so far.
    pos: u64,
    /// Runs of its blocks still to render.
    runs: usize,
}

/// One run of a file's blocks inside one chunk.
#[derive(Clone, Copy)]
struct Run {
    /// First block, counted from the chunk's start.
    at: u64,
    /// Plan position of the file.
    file: usize,
    /// First file block and number of blocks.
    fb: u64,
    blocks: u64,
}

impl PreparedExt4<'_> {
    /// Renders the image chunk by chunk, in order, into `out` (see the module docs). Needs
    /// the image prepared with chunks ([`prepare_ext4`](super::prepare_ext4) with `Some`).
    pub fn write_chunks(
        self,
        out: &mut dyn ChunkOut,
        contents: &dyn Contents,
    ) -> Result<(Ext4Report, super::DataChunks), Ext4WriteError> {
        let size = self.data.chunk_size;
        if size == 0 || !size.is_multiple_of(BLOCK_SIZE) || usize::try_from(size).is_err() {
            return Err(Ext4WriteError::InvalidOption {
                field: "chunk_size",
                reason: "not a positive multiple of the 4 KiB block (prepare the image with chunks)".into(),
            });
        }
        let per = size / BLOCK_SIZE;
        let bs = BLOCK_SIZE as usize;
        let data = &self.data;
        let image_blocks = self.layout.geometry.blocks;

        // Per chunk: the metadata writes in it (byte offset in the chunk, bytes), in the
        // order they were rendered, so a later write wins as it does in a file.
        let mut meta: BTreeMap<u64, Vec<(usize, &[u8])>> = BTreeMap::new();
        for (block, bytes) in &self.meta.writes {
            for (k, piece) in bytes.chunks(bs).enumerate() {
                let b = block + k as u64;
                let chunk = b / per;
                if data.reused.contains(&chunk) {
                    continue;
                }
                meta.entry(chunk)
                    .or_default()
                    .push((((b - chunk * per) * BLOCK_SIZE) as usize, piece));
            }
        }

        // Per chunk: the runs of file blocks in it; per file: how many runs it has to
        // render. Files with nothing to render are not opened, except an empty file when
        // nothing is reused (its reader must be empty), as `write` does.
        let mut runs: BTreeMap<u64, Vec<Run>> = BTreeMap::new();
        let mut count: BTreeMap<usize, usize> = BTreeMap::new();
        let mut empty = Vec::new();
        for &i in &self.files {
            let pl = &self.layout.placements[i];
            if pl.extents.is_empty() && data.reused.is_empty() {
                empty.push(i);
            }
            let mut fb = 0u64;
            for e in &pl.extents {
                let (mut at, end) = (e.start, e.start + u64::from(e.len));
                while at < end {
                    let chunk = at / per;
                    let stop = end.min((chunk + 1) * per);
                    if !data.reused.contains(&chunk) {
                        runs.entry(chunk).or_default().push(Run {
                            at: at - chunk * per,
                            file: i,
                            fb,
                            blocks: stop - at,
                        });
                        *count.entry(i).or_default() += 1;
                    }
                    fb += stop - at;
                    at = stop;
                }
            }
        }

        let mut files = Files {
            prepared: &self,
            contents,
            open: BTreeMap::new(),
            count,
            skip: Vec::new(),
        };
        for i in empty {
            let mut f = files.open(i)?;
            files.finish(i, &mut f)?;
        }
        let chunks = image_blocks.div_ceil(per);
        for chunk in 0..chunks {
            let len = (image_blocks.min((chunk + 1) * per) - chunk * per) * BLOCK_SIZE;
            if data.reused.contains(&chunk) {
                let recipe = data.recipes.get(&chunk).copied().unwrap_or_default();
                out.chunk(chunk, ChunkBody::Reused { len, recipe })?;
                continue;
            }
            let (m, r) = (meta.remove(&chunk), runs.remove(&chunk));
            if m.is_none() && r.is_none() {
                out.chunk(chunk, ChunkBody::Zero { len })?;
                continue;
            }
            // At most the chunk size, checked to fit a `usize` above.
            let mut buf = out.buffer(len as usize);
            for (off, bytes) in m.unwrap_or_default() {
                buf[off..off + bytes.len()].copy_from_slice(bytes);
            }
            for run in r.unwrap_or_default() {
                let at = (run.at * BLOCK_SIZE) as usize;
                let end = at + (run.blocks * BLOCK_SIZE) as usize;
                files.read_run(run, &mut buf[at..end])?;
            }
            out.chunk(chunk, ChunkBody::Data(buf))?;
        }
        Ok((self.report, self.data))
    }
}

/// The files' readers while the chunks are rendered.
struct Files<'p, 'n, 'c> {
    prepared: &'p PreparedExt4<'n>,
    contents: &'c dyn Contents,
    open: BTreeMap<usize, Open<'c>>,
    /// Runs still to render, per file, before it is opened.
    count: BTreeMap<usize, usize>,
    skip: Vec<u8>,
}

impl<'c> Files<'_, '_, 'c> {
    fn path(&self, i: usize) -> String {
        match &self.prepared.plan.inodes[i].body {
            Body::File { node, .. } => self.prepared.nodes.get(*node).map_or("", |n| n.path.as_str()),
            _ => "",
        }
        .to_string()
    }

    fn size(&self, i: usize) -> u64 {
        self.prepared.plan.inodes[i].size
    }

    fn open(&mut self, i: usize) -> Result<Open<'c>, Ext4WriteError> {
        let Body::File { content, .. } = &self.prepared.plan.inodes[i].body else {
            return Err(Ext4WriteError::InvalidNode {
                path: self.path(i),
                reason: "not a regular file".into(),
            });
        };
        let reader = self
            .contents
            .open(content)
            .map_err(|source| Ext4WriteError::ContentOpen {
                path: self.path(i),
                source,
            })?;
        Ok(Open {
            reader,
            pos: 0,
            runs: self.count.get(&i).copied().unwrap_or(0),
        })
    }

    /// Reads and drops `n` bytes of `f`; `Ok(false)` if it ends first.
    fn skip(&mut self, f: &mut Open<'c>, n: u64, i: usize) -> Result<bool, Ext4WriteError> {
        if self.skip.is_empty() {
            self.skip = vec![0; 256 * BLOCK_SIZE as usize];
        }
        let mut left = n;
        while left > 0 {
            let want = left.min(self.skip.len() as u64) as usize;
            let got = read_full(f.reader.as_mut(), &mut self.skip[..want]).map_err(|source| {
                Ext4WriteError::ContentRead {
                    path: self.path(i),
                    source,
                }
            })?;
            f.pos += got as u64;
            left -= got as u64;
            if got < want {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Fills `dst` with the run's blocks of its file, zero past the file's end.
    fn read_run(&mut self, run: Run, dst: &mut [u8]) -> Result<(), Ext4WriteError> {
        let i = run.file;
        let size = self.size(i);
        let from = run.fb * BLOCK_SIZE;
        let mut f = match self.open.remove(&i) {
            // Its blocks ascend: read on.
            Some(f) if f.pos <= from => f,
            // A run before the reader's position (or the first): read from the start.
            Some(f) => Open {
                runs: f.runs,
                ..self.open(i)?
            },
            None => self.open(i)?,
        };
        let short = |actual: u64, path: String| Ext4WriteError::ContentSize {
            path,
            expected: size,
            actual: actual.to_string(),
        };
        let gap = from - f.pos;
        if !self.skip(&mut f, gap, i)? {
            return Err(short(f.pos, self.path(i)));
        }
        let want = (dst.len() as u64).min(size.saturating_sub(from)) as usize;
        let got =
            read_full(f.reader.as_mut(), &mut dst[..want]).map_err(|source| Ext4WriteError::ContentRead {
                path: self.path(i),
                source,
            })?;
        f.pos += got as u64;
        if got < want {
            return Err(short(f.pos, self.path(i)));
        }
        f.runs = f.runs.saturating_sub(1);
        match f.runs {
            0 => self.finish(i, &mut f),
            _ => {
                self.open.insert(i, f);
                Ok(())
            }
        }
    }

    /// Reads the rest of `f` (blocks in reused chunks), checking that it ends at the
    /// node's size.
    fn finish(&mut self, i: usize, f: &mut Open<'c>) -> Result<(), Ext4WriteError> {
        let size = self.size(i);
        let rest = size.saturating_sub(f.pos);
        if !self.skip(f, rest, i)? {
            return Err(Ext4WriteError::ContentSize {
                path: self.path(i),
                expected: size,
                actual: f.pos.to_string(),
            });
        }
        let mut extra = [0u8; 1];
        let more =
            read_full(f.reader.as_mut(), &mut extra).map_err(|source| Ext4WriteError::ContentRead {
                path: self.path(i),
                source,
            })?;
        if more > 0 {
            return Err(Ext4WriteError::ContentSize {
                path: self.path(i),
                expected: size,
                actual: "more".into(),
            });
        }
        Ok(())
    }
}
