//! The QR code `nfknock keygen --fwknop --qr` prints for the Android Fwknop2 app, drawn with
//! Unicode half blocks (two module rows per text line). Pure: text in, text out.
//!
//! Fwknop2's payload format is in its own source: `ConfigDetailFragment.onActivityResult`
//! (github.com/jp-bennett/Fwknop2, `app/src/main/java/biz/incomsystems/fwknop2/
//! ConfigDetailFragment.java`, commit c15b66dc7b7f) splits the scanned text on spaces, each
//! part on `:`, and takes `KEY_BASE64`, `KEY`, `HMAC_KEY_BASE64` and `HMAC_KEY` (case
//! insensitive). Its `Config.java` refuses base64 keys whose length is not a multiple of 4, so
//! the keys keep their `=` padding.

use zeroize::Zeroizing;

/// Fwknop2's scan payload: `KEY_BASE64:<key> HMAC_KEY_BASE64:<hmac key>` (padded base64).
pub(super) fn fwknop2_payload(key_b64: &str, hmac_b64: &str) -> Zeroizing<String> {
    Zeroizing::new(format!("KEY_BASE64:{key_b64} HMAC_KEY_BASE64:{hmac_b64}"))
}

/// Light modules around the code (the QR standard's quiet zone).
const QUIET: usize = 4;

/// Draw `payload` as a QR code (error correction level M) in half blocks. With `dark_terminal`
/// the light modules are drawn (`█`), for light text on a dark background, the usual terminal;
/// otherwise the dark modules are. `None` if the payload does not fit a QR code.
pub(super) fn half_blocks(payload: &[u8], dark_terminal: bool) -> Option<Zeroizing<String>> {
    let code = qrcode::QrCode::with_error_correction_level(payload, qrcode::EcLevel::M).ok()?;
    let width = code.width();
    let modules: Zeroizing<Vec<bool>> = Zeroizing::new(
        code.to_colors()
            .into_iter()
            .map(|c| c == qrcode::Color::Dark)
            .collect(),
    );
    let size = width + 2 * QUIET;
    // Is the module at (x, y) of the bordered square dark? Outside the square: light (the
    // last half line of an odd height extends the quiet zone).
    let dark = |x: usize, y: usize| -> bool {
        let (Some(cx), Some(cy)) = (x.checked_sub(QUIET), y.checked_sub(QUIET)) else {
            return false;
        };
        cx < width && cy < width && modules.get(cy * width + cx).copied().unwrap_or(false)
    };
    let drawn = |x: usize, y: usize| dark(x, y) != dark_terminal;
    let mut out = Zeroizing::new(String::with_capacity((size * 3 + 1) * size.div_ceil(2)));
    for y in (0..size).step_by(2) {
        for x in 0..size {
            let top = drawn(x, y);
            let bottom = if y + 1 < size {
                drawn(x, y + 1)
            } else {
                dark_terminal
            };
            out.push(match (top, bottom) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push('\n');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_is_fwknop2s_format() {
        assert_eq!(
            fwknop2_payload("a2V5", "aG1hYw==").as_str(),
            "KEY_BASE64:a2V5 HMAC_KEY_BASE64:aG1hYw=="
        );
    }

    #[test]
    fn half_blocks_draw_a_bordered_square() {
        let text = half_blocks(b"KEY_BASE64:x HMAC_KEY_BASE64:y", true).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let width = lines[0].chars().count();
        // A QR code of 21 + 4·k modules plus the quiet zone on each side.
        assert!(width >= 21 + 8 && (width - 8 - 21) % 4 == 0, "{width}");
        assert_eq!(lines.len(), width.div_ceil(2));
        assert!(lines.iter().all(|l| l.chars().count() == width));
        // The quiet zone is light: drawn full on a dark terminal, blank on a light one.
        assert!(lines[0].chars().all(|c| c == '█'));
        let light = half_blocks(b"KEY_BASE64:x HMAC_KEY_BASE64:y", false).unwrap();
        assert!(light.lines().next().unwrap().chars().all(|c| c == ' '));
        // Inverting swaps every cell.
        for (a, b) in text.chars().zip(light.chars()) {
            let inv = match a {
                '█' => ' ',
                ' ' => '█',
                '▀' => '▄',
                '▄' => '▀',
                c => c,
            };
            assert_eq!(inv, b);
        }
    }

    #[test]
    fn too_long_a_payload_is_none() {
        assert!(half_blocks(&[b'x'; 4000], true).is_none());
    }
}
