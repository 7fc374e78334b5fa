//! `--prefix`: a generation's captured stdout and stderr, copied to
//! devsup's own with each line prefixed by its generation.

use std::os::fd::OwnedFd;

use tracing::warn;

use crate::event::GenId;

/// Copies a generation's output to devsup's, each line prefixed with
/// `[gen N] ` and written in one piece, so lines of overlapping
/// generations never interleave mid-line.
pub(super) fn spawn_prefixer(gen_id: GenId, pipe: OwnedFd, stderr: bool) {
    use std::io::{BufRead, Write};
    let spawned = std::thread::Builder::new()
        .name(format!("gen-{gen_id}-output"))
        .spawn(move || {
            let mut reader = std::io::BufReader::new(std::fs::File::from(pipe));
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                if line.last() != Some(&b'\n') {
                    line.push(b'\n');
                }
                let mut out = format!("[gen {gen_id}] ").into_bytes();
                out.extend_from_slice(&line);
                let _ = if stderr {
                    std::io::stderr().lock().write_all(&out)
                } else {
                    std::io::stdout().lock().write_all(&out)
                };
            }
        });
    if let Err(e) = spawned {
        warn!(
            generation = gen_id,
            "cannot start a thread for its output: {e}"
        );
    }
}
