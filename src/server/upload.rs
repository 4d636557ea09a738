//! A job's multipart form: read within the time and size limits, checked field by field, the
//! images' sizes read from their headers before anything is decoded.

use std::path::Path;

use axum::body::Bytes;
use axum::extract::multipart::{Field, Multipart, MultipartError};
use axum::http::StatusCode;
use image::RgbImage;

use super::error::ApiError;
use crate::imaging;

/// An uploaded file: its name (for messages and the recipe) and bytes.
pub struct Upload {
    pub name: String,
    pub bytes: Bytes,
}

/// The fields of `POST /api/jobs`.
#[derive(Default)]
pub struct Submission {
    pub photo: Option<Upload>,
    pub painting: Option<Upload>,
    pub style: Option<String>,
    pub method: Option<String>,
    pub strength: Option<f32>,
    pub preserve_color: bool,
    pub size: Option<u32>,
    pub steps: Option<usize>,
    pub transform: Option<String>,
    pub seed: Option<u64>,
    pub stroke: Option<f64>,
    /// Where the style paints: a grey image, white paints (any size, scaled to the photo).
    pub mask: Option<Upload>,
    /// Feather of the mask's edge in pixels of the result.
    pub feather: Option<f32>,
}

/// The form's field names, for the message when a client sends another.
pub const FIELDS: [&str; 13] = [
    "photo",
    "painting",
    "style",
    "method",
    "strength",
    "preserve_color",
    "size",
    "steps",
    "transform",
    "seed",
    "stroke",
    "mask",
    "feather",
];

fn multipart_error(error: MultipartError) -> ApiError {
    let status = error.status();
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::too_large(format!("the upload is too large: {}", error.body_text()))
    } else {
        ApiError::new(
            status,
            "bad_multipart",
            format!("malformed multipart form: {}", error.body_text()),
        )
    }
}

async fn text(field: Field<'_>, name: &str) -> Result<String, ApiError> {
    let bytes = field.bytes().await.map_err(multipart_error)?;
    if bytes.len() > 256 {
        return Err(ApiError::bad_request(
            "bad_field",
            format!("field `{name}` is too long for a setting"),
        ));
    }
    String::from_utf8(bytes.to_vec())
        .map(|s| s.trim().to_string())
        .map_err(|_| ApiError::bad_request("bad_field", format!("field `{name}` is not text")))
}

fn number<T: std::str::FromStr>(value: &str, name: &str) -> Result<T, ApiError> {
    value.parse().map_err(|_| {
        ApiError::bad_request(
            "bad_field",
            format!("field `{name}` must be a number, got `{value}`"),
        )
    })
}

fn flag(value: &str, name: &str) -> Result<bool, ApiError> {
    match value.to_ascii_lowercase().as_str() {
        "" | "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(ApiError::bad_request(
            "bad_field",
            format!("field `{name}` must be true or false, got `{value}`"),
        )),
    }
}

/// Reads the whole form (the caller bounds the time it may take).
pub async fn read(mut multipart: Multipart) -> Result<Submission, ApiError> {
    let mut form = Submission::default();
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        let name = field.name().unwrap_or_default().to_string();
        match name.as_str() {
            "photo" | "painting" | "mask" => {
                let file_name = field
                    .file_name()
                    .filter(|n| !n.is_empty())
                    .map(|n| {
                        // Only the last component: a name is for messages, never a path here.
                        Path::new(n)
                            .file_name()
                            .map(|n| n.to_string_lossy().into_owned())
                            .unwrap_or_else(|| name.clone())
                    })
                    .unwrap_or_else(|| name.clone());
                let bytes = field.bytes().await.map_err(multipart_error)?;
                let upload = Some(Upload {
                    name: file_name,
                    bytes,
                });
                match name.as_str() {
                    "photo" => form.photo = upload,
                    "mask" => form.mask = upload,
                    _ => form.painting = upload,
                }
            }
            "style" => form.style = Some(text(field, &name).await?).filter(|s| !s.is_empty()),
            "method" => form.method = Some(text(field, &name).await?).filter(|s| !s.is_empty()),
            "transform" => {
                form.transform = Some(text(field, &name).await?).filter(|s| !s.is_empty())
            }
            "strength" => form.strength = Some(number(&text(field, &name).await?, &name)?),
            "size" => {
                let value = text(field, &name).await?;
                if !value.is_empty() {
                    form.size = Some(number(&value, &name)?);
                }
            }
            "steps" => form.steps = Some(number(&text(field, &name).await?, &name)?),
            "seed" => form.seed = Some(number(&text(field, &name).await?, &name)?),
            "stroke" => {
                let value = text(field, &name).await?;
                if !value.is_empty() {
                    form.stroke = Some(number(&value, &name)?);
                }
            }
            "feather" => {
                let value = text(field, &name).await?;
                if !value.is_empty() {
                    form.feather = Some(number(&value, &name)?);
                }
            }
            "preserve_color" => form.preserve_color = flag(&text(field, &name).await?, &name)?,
            _ => {
                return Err(ApiError::bad_request(
                    "unknown_field",
                    format!(
                        "unknown form field `{name}`; the fields are {}",
                        FIELDS.join(", ")
                    ),
                ))
            }
        }
    }
    Ok(form)
}

/// Reads an uploaded image's size from its header and refuses one over `max_pixels` before
/// any pixel is decoded (a 30000×30000 header in a few bytes would otherwise ask for 2.7 GB).
pub fn check_header(upload: &Upload, what: &str, max_pixels: u64) -> Result<(), ApiError> {
    let reader = image::ImageReader::new(std::io::Cursor::new(&upload.bytes[..]))
        .with_guessed_format()
        .map_err(|e| ApiError::internal(format!("cannot read the upload: {e}")))?;
    if reader.format().is_none() {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not_an_image",
            format!(
                "the {what} `{}` is not an image this server reads (PNG, JPEG, WebP, BMP or TIFF)",
                upload.name
            ),
        ));
    }
    let (width, height) = reader.into_dimensions().map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_image",
            format!("the {what} `{}` cannot be read: {e}", upload.name),
        )
    })?;
    let pixels = u64::from(width) * u64::from(height);
    if width == 0 || height == 0 {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_image",
            format!("the {what} `{}` has no pixels", upload.name),
        ));
    }
    if pixels > max_pixels {
        return Err(ApiError::too_large(format!(
            "the {what} `{}` is {width}×{height} ({:.1} megapixels); this server takes at most \
             {:.1} megapixels",
            upload.name,
            pixels as f64 / 1e6,
            max_pixels as f64 / 1e6
        )));
    }
    Ok(())
}

/// Decodes an uploaded mask whose header passed [`check_header`].
pub fn decode_mask(upload: &Upload) -> Result<image::GrayImage, ApiError> {
    imaging::decode_mask(upload.bytes.to_vec(), Path::new(&upload.name)).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "bad_image",
            format!("the mask cannot be used: {e}"),
        )
    })
}

/// Decodes an upload whose header passed [`check_header`] (slow for big photos: call it on
/// the blocking pool).
pub fn decode(upload: &Upload, what: &str) -> Result<RgbImage, ApiError> {
    imaging::decode_rgb(upload.bytes.to_vec(), Path::new(&upload.name), false)
        .map(|(image, _)| image)
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "bad_image",
                format!("the {what} cannot be used: {e}"),
            )
        })
}
