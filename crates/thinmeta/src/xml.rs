//! Text output in the XML dialects of `thin_delta` and `thin_dump` (thin-provisioning-tools
//! 0.9.0), element for element.

use std::io::{self, Write};

use crate::delta::{DeltaKind, DeltaRun};
use crate::details::DeviceDetails;
use crate::mappings::MappedRun;
use crate::superblock::Superblock;

fn kind_tag(kind: DeltaKind) -> &'static str {
    match kind {
        DeltaKind::Same => "same",
        DeltaKind::Different => "different",
        DeltaKind::LeftOnly => "left_only",
        DeltaKind::RightOnly => "right_only",
    }
}

/// Writes `thin_delta` output for the runs of a [`crate::DeltaMode::Full`] delta, or (without
/// `verbose` only) of a [`crate::DeltaMode::FullByKey`] one, which gives the same plain output
/// faster.
///
/// The header comes from `sb`, the superblock the delta was read through (with `-m` that is
/// the snapshot copy, whose zeroed data space map gives `nr_data_blocks="0"`, as thin_delta
/// prints it); `metadata_snap` is printed when that superblock holds one.
///
/// Without `verbose`, runs of the same kind that touch are merged whatever their data blocks.
/// With `verbose`, consecutive runs of the same kind are grouped in one element, one `<range>`
/// per run of contiguous data blocks.
pub fn write_delta<W: Write, E>(
    out: &mut W,
    sb: &Superblock,
    left: u64,
    right: u64,
    runs: impl IntoIterator<Item = Result<DeltaRun, E>>,
    verbose: bool,
) -> Result<(), DeltaOutputError<E>> {
    let io = DeltaOutputError::Io;
    write!(
        out,
        "<superblock uuid=\"\" time=\"{}\" transaction=\"{}\" data_block_size=\"{}\" nr_data_blocks=\"{}\"",
        sb.time, sb.transaction_id, sb.data_block_size, sb.data_space_map.nr_blocks
    )
    .map_err(io)?;
    if sb.metadata_snap != 0 {
        write!(out, " metadata_snap=\"{}\"", sb.metadata_snap).map_err(io)?;
    }
    writeln!(out, ">").map_err(io)?;
    writeln!(out, "  <diff left=\"{left}\" right=\"{right}\">").map_err(io)?;
    // Lines are assembled in one reused buffer with a plain integer formatter: verbose output
    // has a line per run of contiguous data blocks (millions on a big device).
    let mut line = Line::new();
    if verbose {
        let mut open: Option<DeltaKind> = None;
        for run in runs {
            let run = run.map_err(DeltaOutputError::Delta)?;
            line.clear();
            if open != Some(run.kind) {
                if let Some(k) = open {
                    line.push_all(&["    </", kind_tag(k), ">\n"]);
                }
                line.push_all(&["    <", kind_tag(run.kind), ">\n"]);
                open = Some(run.kind);
            }
            line.push(b"      <range begin=\"");
            line.push_u64(run.begin);
            match (run.left_data, run.right_data) {
                (Some(l), Some(r)) if run.kind == DeltaKind::Different => {
                    line.push(b"\" left_data_begin=\"");
                    line.push_u64(l);
                    line.push(b"\" right_data_begin=\"");
                    line.push_u64(r);
                }
                (l, r) => {
                    line.push(b"\" data_begin=\"");
                    line.push_u64(l.or(r).unwrap_or(0));
                }
            }
            line.push(b"\" length=\"");
            line.push_u64(run.length);
            line.push(b"\"/>\n");
            out.write_all(line.bytes()).map_err(io)?;
        }
        if let Some(k) = open {
            writeln!(out, "    </{}>", kind_tag(k)).map_err(io)?;
        }
    } else {
        let mut write_plain = |out: &mut W, (k, b, l): (DeltaKind, u64, u64)| {
            line.clear();
            line.push_all(&["    <", kind_tag(k), " begin=\""]);
            line.push_u64(b);
            line.push(b"\" length=\"");
            line.push_u64(l);
            line.push(b"\"/>\n");
            out.write_all(line.bytes())
        };
        let mut pending: Option<(DeltaKind, u64, u64)> = None;
        for run in runs {
            let run = run.map_err(DeltaOutputError::Delta)?;
            if let Some((k, b, l)) = &mut pending {
                if *k == run.kind && b.checked_add(*l) == Some(run.begin) {
                    *l += run.length;
                    continue;
                }
            }
            if let Some(done) = pending.replace((run.kind, run.begin, run.length)) {
                write_plain(out, done).map_err(io)?;
            }
        }
        if let Some(done) = pending {
            write_plain(out, done).map_err(io)?;
        }
    }
    writeln!(out, "  </diff>").map_err(io)?;
    writeln!(out, "</superblock>").map_err(io)?;
    Ok(())
}

/// One output line, assembled on the stack with a plain integer formatter: the longest line
/// (a verbose `different` range after closing and opening elements) is under 200 bytes.
struct Line {
    buf: [u8; 256],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Line {
            buf: [0; 256],
            len: 0,
        }
    }

    fn clear(&mut self) {
        self.len = 0;
    }

    fn push(&mut self, s: &[u8]) {
        self.buf[self.len..self.len + s.len()].copy_from_slice(s);
        self.len += s.len();
    }

    fn push_all(&mut self, parts: &[&str]) {
        for p in parts {
            self.push(p.as_bytes());
        }
    }

    /// Appends the decimal digits of `n`.
    fn push_u64(&mut self, mut n: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Failure while writing a delta: the delta itself failed, or the output did.
#[derive(Debug)]
pub enum DeltaOutputError<E> {
    /// The delta stream gave an error.
    Delta(E),
    /// Writing failed.
    Io(io::Error),
}

/// Writes the `thin_dump` opening element (`nr_data_blocks` from `sb`'s data space map).
pub fn write_dump_header<W: Write>(out: &mut W, sb: &Superblock) -> io::Result<()> {
    writeln!(
        out,
        "<superblock uuid=\"\" time=\"{}\" transaction=\"{}\" flags=\"{}\" version=\"{}\" data_block_size=\"{}\" nr_data_blocks=\"{}\">",
        sb.time,
        sb.transaction_id,
        sb.flags,
        sb.version,
        sb.data_block_size,
        sb.data_space_map.nr_blocks
    )
}

/// Writes the opening `<device>` element.
pub fn write_dump_device<W: Write>(out: &mut W, d: &DeviceDetails) -> io::Result<()> {
    writeln!(
        out,
        "  <device dev_id=\"{}\" mapped_blocks=\"{}\" transaction=\"{}\" creation_time=\"{}\" snap_time=\"{}\">",
        d.dev_id, d.mapped_blocks, d.transaction_id, d.creation_time, d.snapshotted_time
    )
}

/// Writes one mapped run as `thin_dump` does.
pub fn write_dump_run<W: Write>(out: &mut W, r: &MappedRun) -> io::Result<()> {
    // Millions of lines on a big device: assembled with the plain integer formatter.
    let mut line = Line::new();
    if r.length == 1 {
        line.push(b"    <single_mapping origin_block=\"");
        line.push_u64(r.virtual_begin);
        line.push(b"\" data_block=\"");
        line.push_u64(r.data_begin);
    } else {
        line.push(b"    <range_mapping origin_begin=\"");
        line.push_u64(r.virtual_begin);
        line.push(b"\" data_begin=\"");
        line.push_u64(r.data_begin);
        line.push(b"\" length=\"");
        line.push_u64(r.length);
    }
    line.push(b"\" time=\"");
    line.push_u64(u64::from(r.time));
    line.push(b"\"/>\n");
    out.write_all(line.bytes())
}

/// Closes a `<device>` element.
pub fn write_dump_device_end<W: Write>(out: &mut W) -> io::Result<()> {
    writeln!(out, "  </device>")
}

/// Closes the `<superblock>` element.
pub fn write_dump_end<W: Write>(out: &mut W) -> io::Result<()> {
    writeln!(out, "</superblock>")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::superblock::SpaceMapRoot;
    use DeltaKind::*;

    fn sb() -> Superblock {
        Superblock {
            location: 0,
            flags: 0,
            uuid: [0; 16],
            version: 2,
            time: 1,
            transaction_id: 3,
            metadata_snap: 0,
            data_space_map: SpaceMapRoot {
                nr_blocks: 4096,
                ..SpaceMapRoot::default()
            },
            metadata_space_map: SpaceMapRoot::default(),
            mapping_root: 1,
            details_root: 2,
            data_block_size: 128,
            metadata_block_size: 8,
            nr_metadata_blocks: 100,
            compat_flags: 0,
            compat_ro_flags: 0,
            incompat_flags: 0,
        }
    }

    fn run(kind: DeltaKind, begin: u64, length: u64, l: Option<u64>, r: Option<u64>) -> DeltaRun {
        DeltaRun {
            kind,
            begin,
            length,
            left_data: l,
            right_data: r,
        }
    }

    fn render(runs: &[DeltaRun], verbose: bool) -> String {
        let mut out = Vec::new();
        let it = runs.iter().map(|r| Ok::<_, ()>(*r));
        write_delta(&mut out, &sb(), 1, 2, it, verbose).unwrap();
        String::from_utf8(out).unwrap()
    }

    // Expected texts are thin_delta 0.9.0's output for the same mappings (see
    // tests/delta_oracle.rs for the automated comparison).
    #[test]
    fn plain_output_merges_touching_runs_of_one_kind() {
        let runs = [
            run(Same, 0, 1, Some(0), Some(0)),
            run(Same, 1, 1, Some(100), Some(100)),
            run(Different, 2, 1, Some(5), Some(20)),
            run(Different, 3, 1, Some(6), Some(30)),
            run(LeftOnly, 10, 2, Some(60), None),
            run(LeftOnly, 13, 1, Some(90), None),
            run(RightOnly, 14, 1, None, Some(60)),
        ];
        let text = render(&runs, false);
        let body: Vec<&str> = text.lines().skip(2).take(5).map(str::trim).collect();
        assert_eq!(
            body,
            [
                "<same begin=\"0\" length=\"2\"/>",
                "<different begin=\"2\" length=\"2\"/>",
                "<left_only begin=\"10\" length=\"2\"/>",
                "<left_only begin=\"13\" length=\"1\"/>",
                "<right_only begin=\"14\" length=\"1\"/>",
            ]
        );
    }

    #[test]
    fn integers_are_formatted_like_display() {
        for n in [
            0,
            1,
            9,
            10,
            99,
            100,
            12345,
            u64::from(u32::MAX),
            u64::MAX - 1,
            u64::MAX,
        ] {
            let mut line = Line::new();
            line.push_u64(n);
            line.push_u64(n);
            assert_eq!(line.bytes(), format!("{n}{n}").as_bytes());
        }
    }

    #[test]
    fn verbose_output_groups_one_kind_across_gaps() {
        let runs = [
            run(Same, 0, 8, Some(0), Some(0)),
            run(Same, 14, 2, Some(60), Some(60)),
            run(Different, 20, 1, Some(5), Some(20)),
        ];
        let text = render(&runs, true);
        let expected = "<superblock uuid=\"\" time=\"1\" transaction=\"3\" data_block_size=\"128\" nr_data_blocks=\"4096\">
  <diff left=\"1\" right=\"2\">
    <same>
      <range begin=\"0\" data_begin=\"0\" length=\"8\"/>
      <range begin=\"14\" data_begin=\"60\" length=\"2\"/>
    </same>
    <different>
      <range begin=\"20\" left_data_begin=\"5\" right_data_begin=\"20\" length=\"1\"/>
    </different>
  </diff>
</superblock>
";
        assert_eq!(text, expected);
    }
}
