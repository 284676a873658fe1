//! The frame view analytics reads: packed RGB8, as the decoder hands it over.

/// A borrowed packed RGB8 image (`width * height * 3` bytes, rows without padding).
#[derive(Debug, Clone, Copy)]
pub struct RgbImage<'a> {
    pub width: u32,
    pub height: u32,
    pub data: &'a [u8],
}

/// Why bytes are not an RGB image of the stated size.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadImage {
    pub width: u32,
    pub height: u32,
    pub len: usize,
}

impl std::fmt::Display for BadImage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}x{} RGB needs {} bytes, got {}",
            self.width,
            self.height,
            self.width as usize * self.height as usize * 3,
            self.len
        )
    }
}

impl std::error::Error for BadImage {}

impl<'a> RgbImage<'a> {
    pub fn new(width: u32, height: u32, data: &'a [u8]) -> Result<Self, BadImage> {
        if width == 0 || height == 0 || data.len() != width as usize * height as usize * 3 {
            return Err(BadImage {
                width,
                height,
                len: data.len(),
            });
        }
        Ok(Self {
            width,
            height,
            data,
        })
    }
}
