//! A bpffs folder of its own for each test, removed afterwards.

use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicU32, Ordering},
};

use anyhow::Result;

static NEXT: AtomicU32 = AtomicU32::new(0);

pub struct PinDir {
    pub path: PathBuf,
}

impl PinDir {
    pub fn new(tag: &str) -> Result<Self> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = PathBuf::from(format!("/sys/fs/bpf/{}-{}-{n}-{tag}", crate::netns::PREFIX, std::process::id()));
        proxy_agent::dataplane::prepare_pin_dir(&path)?;
        Ok(Self { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}
