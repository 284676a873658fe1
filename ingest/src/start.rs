//! The one entry point the service needs: a `[[cameras]]` entry in, a running camera out,
//! on the backend the entry names.

use std::sync::Arc;

use sharpeyes_config::schema::{Backend, Transport};
use sharpeyes_config::{Camera, SecretUrl};
use tokio::sync::watch;

use crate::camera::{CameraHandle, SourceConfig, Timeouts, spawn};
use crate::error::{Error, ErrorKind};
use crate::gst_source::{GstInput, GstSourceConfig, spawn_gst};

/// `url` (one of `camera`'s) with its secrets expanded and the login its `credentials`
/// name set in it. Fails when a secret cannot be expanded, naming it, never its value.
pub fn login_url(camera: &Camera, url: &SecretUrl) -> Result<url::Url, Error> {
    let secret = |e: sharpeyes_config::SecretError| Error::new(ErrorKind::Secret(e.to_string()));
    let mut expanded = url.expand().map_err(secret)?;
    if let Some(login) = &camera.login {
        // Set apart from the template, so the URL encodes whatever the password holds.
        let user = login.user.expand().map_err(secret)?;
        let password = login.password.expand().map_err(secret)?;
        if expanded.set_username(&user).is_err() || expanded.set_password(Some(&password)).is_err()
        {
            return Err(Error::new(ErrorKind::Secret(format!(
                "camera {}: {url} cannot carry a login",
                camera.id
            ))));
        }
    }
    Ok(expanded)
}

/// Starts `camera` on its backend: `file://` URLs replay a recording, `backend = "gstreamer"`
/// uses `rtspsrc`, anything else retina. Frames are decoded with their longer side at most
/// `detect_side`; with `skip_quiet`, keyframes whose bitstream shows no change are not
/// decoded, but one at least that often (retina only). Fails only when the URL's secrets
/// (or its named `credentials`) cannot be expanded.
pub fn start_camera(
    camera: &Camera,
    detect_side: u32,
    skip_quiet: Option<std::time::Duration>,
    timeouts: Timeouts,
    shutdown: watch::Receiver<bool>,
) -> Result<CameraHandle, Error> {
    let url = login_url(camera, camera.detect_url())?;
    let id: Arc<str> = Arc::from(camera.id.as_str());
    let udp = camera.transport == Transport::Udp;
    let gst = |input| GstSourceConfig {
        camera: id.clone(),
        input,
        sampling: camera.sampling,
        detect_side,
        timeouts,
    };
    Ok(match (url.scheme(), camera.backend) {
        ("file", _) => spawn_gst(gst(GstInput::File(url.path().into())), shutdown),
        (_, Backend::Gstreamer) => spawn_gst(gst(GstInput::Rtsp { url, udp }), shutdown),
        (_, Backend::Retina) => spawn(
            SourceConfig {
                camera: id,
                url,
                udp,
                sampling: camera.sampling,
                skip_quiet,
                detect_side,
                hardware_decoding: true,
                timeouts,
            },
            shutdown,
        ),
    })
}
