//! Embeds tauri.conf.json, the icons and the launcher pages into the desktop app.

fn main() {
    tauri_build::build()
}
