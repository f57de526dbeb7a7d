//! Names for the kernel's `tty_nr` (a `dev_t`: major in bits 8-19, minor in
//! bits 0-7 and 20-31).

/// Unix98 pty slaves (`/dev/pts/N`): current kernels put every pty on major
/// 136 with a 20-bit minor; 137-143 are the old 8-bit-minor layout.
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
        // Majors 137-143 are the pre-2.6 pty layout: still decoded as ptys.
        assert_eq!(tty_name((137 << 8) | 1), "pts/257");
        assert_eq!(tty_name(1025), "4:1"); // /dev/tty1
        assert_eq!(tty_name((5 << 8) | 1), "5:1"); // /dev/console
    }

    #[test]
    fn the_fixture_encodes_like_the_kernel() {
        use crate::testing::pts;
        // Values as printed in /proc/<pid>/stat by a kernel for /dev/pts/N.
        assert_eq!(pts(0), 34816);
        assert_eq!(pts(255), 34816 + 255);
        assert_eq!(pts(256), 0x0010_8800);
        assert_eq!(pts(524_288) as i32, -2_147_448_832);
        for n in [0, 1, 255, 256, 300, 4095, 65_535, 524_288, (1 << 20) - 1] {
            assert_eq!(major_minor(pts(n)), (136, n), "{n}");
            assert_eq!(tty_name(pts(n)), format!("pts/{n}"));
        }
    }
}
