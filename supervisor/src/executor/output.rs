//! `--prefix`: a generation's captured stdout and stderr, copied to
//! devsup's own with each line prefixed by its generation.

use std::io::{BufRead, Read, Write};
use std::os::fd::OwnedFd;

use tracing::warn;

use crate::event::GenId;

/// Longest piece of a line copied at once: a longer line (or a blob with
/// no newline at all) is copied in pieces of this size, each on a line of
/// its own, so that devsup never holds more of it.
const MAX_LINE: usize = 64 * 1024;

/// Copies a generation's output to devsup's, each line prefixed with
/// `[gen N] ` and written in one piece, so lines of overlapping
/// generations never interleave mid-line.
pub(super) fn spawn_prefixer(gen_id: GenId, pipe: OwnedFd, stderr: bool) {
    let spawned = std::thread::Builder::new()
        .name(format!("gen-{gen_id}-output"))
        .spawn(move || {
            let reader = std::io::BufReader::new(std::fs::File::from(pipe));
            if stderr {
                copy_prefixed(gen_id, reader, &mut std::io::stderr());
            } else {
                copy_prefixed(gen_id, reader, &mut std::io::stdout());
            }
        });
    if let Err(e) = spawned {
        warn!(
            generation = gen_id,
            "cannot start a thread for its output: {e}"
        );
    }
}

/// Copies `reader` to `out` until its end, line by line (pieces of at
/// most [`MAX_LINE`] bytes), each prefixed and written with one call.
fn copy_prefixed(gen_id: GenId, mut reader: impl BufRead, out: &mut impl Write) {
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader)
            .take(MAX_LINE as u64)
            .read_until(b'\n', &mut line)
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        let mut piece = format!("[gen {gen_id}] ").into_bytes();
        piece.extend_from_slice(&line);
        // A broken output stream loses the output, never the pipe's reader.
        let _ = out.write_all(&piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records each `write` call as one piece.
    #[derive(Default)]
    struct Pieces(Vec<Vec<u8>>);

    impl Write for Pieces {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blob_without_newlines_is_copied_in_bounded_pieces() {
        let blob = vec![b'x'; 10 * MAX_LINE + 5];
        let mut input = b"first\n".to_vec();
        input.extend_from_slice(&blob);
        let mut out = Pieces::default();
        copy_prefixed(7, std::io::Cursor::new(input), &mut out);
        assert_eq!(out.0[0], b"[gen 7] first\n");
        let rest = &out.0[1..];
        assert_eq!(rest.len(), 11, "10 whole pieces and the last 5 bytes");
        let mut copied = Vec::new();
        for piece in rest {
            let body = piece.strip_prefix(b"[gen 7] ").unwrap();
            let body = body.strip_suffix(b"\n").unwrap();
            assert!(body.len() <= MAX_LINE, "a piece of {} bytes", body.len());
            copied.extend_from_slice(body);
        }
        assert_eq!(copied, blob, "nothing lost");
    }
}
