//! Names for the kernel's `tty_nr` (a `dev_t`: major in bits 8-19, minor in
//! bits 0-7 and 20-31).

/// Unix98 pty slaves live on majors 136-143 (`/dev/pts/N`).
const PTS_MAJORS: std::ops::RangeInclusive<u32> = 136..=143;

pub fn major_minor(tty_nr: u32) -> (u32, u32) {
    (
        (tty_nr >> 8) & 0xfff,
        (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00),
    )
}

/// `pts/N` for Unix98 ptys, else `major:minor`.
pub fn tty_name(tty_nr: u32) -> String {
    let (major, minor) = major_minor(tty_nr);
    if PTS_MAJORS.contains(&major) {
        format!("pts/{}", (major - 136) * 256 + minor)
    } else {
        format!("{major}:{minor}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(tty_name(34816), "pts/0");
        assert_eq!(tty_name(34819), "pts/3");
        // Minor 300 on major 136 needs the high minor bits.
        assert_eq!(
            tty_name((136 << 8) | (300 & 0xff) | ((300 & !0xff) << 12)),
            "pts/300"
        );
        assert_eq!(tty_name((137 << 8) | 1), "pts/257");
        assert_eq!(tty_name(1025), "4:1"); // /dev/tty1
        assert_eq!(tty_name((5 << 8) | 1), "5:1"); // /dev/console
    }
}
