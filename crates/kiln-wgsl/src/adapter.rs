//! Choosing the adapter Kiln runs on.
//!
//! The order of preference is: discrete GPU, integrated GPU, virtual GPU, anything else,
//! and last a software rasteriser such as Mesa's lavapipe (correct, but it runs on the CPU).
//! `KILN_ADAPTER` overrides that order: `hardware` refuses software adapters, `software`
//! takes only them, and any other value picks the first adapter whose name contains it.

use std::fmt;

use crate::error::{GpuError, Result};

/// The environment variable that overrides the adapter choice.
pub const ADAPTER_ENV: &str = "KILN_ADAPTER";

/// Which adapter to open.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdapterPreference {
    /// The fastest kind present: hardware first, software as the last resort.
    Best,
    /// Hardware adapters only.
    Hardware,
    /// Software adapters only (lavapipe, WARP, SwiftShader).
    Software,
    /// The first adapter whose name contains this text (case-insensitive).
    NameContains(String),
    /// The hardware adapter at this place (from 0) in the order of preference: a
    /// data-parallel process's own GPU on a machine with several.
    NthHardware(usize),
}

impl AdapterPreference {
    /// The preference `KILN_ADAPTER` asks for, or `Best` when it is unset or empty.
    pub fn from_env() -> Self {
        match std::env::var(ADAPTER_ENV) {
            Ok(value) => Self::parse(&value),
            Err(_) => Self::Best,
        }
    }

    pub fn parse(value: &str) -> Self {
        match value.trim().to_ascii_lowercase().as_str() {
            "" | "best" | "auto" => Self::Best,
            "hardware" | "gpu" => Self::Hardware,
            "software" | "cpu" => Self::Software,
            _ => Self::NameContains(value.trim().to_string()),
        }
    }
}

/// What a user wants to know about the adapter a context runs on.
#[derive(Clone, Debug)]
pub struct AdapterSummary {
    pub name: String,
    pub backend: wgpu::Backend,
    pub device_type: wgpu::DeviceType,
    pub driver: String,
}

impl AdapterSummary {
    pub(crate) fn from_info(info: &wgpu::AdapterInfo) -> Self {
        let driver = [info.driver.as_str(), info.driver_info.as_str()]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        Self { name: info.name.clone(), backend: info.backend, device_type: info.device_type, driver }
    }

    /// True for adapters that execute on the CPU (lavapipe and the like).
    pub fn is_software(&self) -> bool {
        self.device_type == wgpu::DeviceType::Cpu
    }
}

impl fmt::Display for AdapterSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({:?}, {:?}", self.name, self.backend, self.device_type)?;
        if !self.driver.is_empty() {
            write!(f, ", {}", self.driver)?;
        }
        write!(f, ")")
    }
}

fn rank(device_type: wgpu::DeviceType) -> u8 {
    match device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Other => 3,
        wgpu::DeviceType::Cpu => 4,
    }
}

fn compute_adapters(instance: &wgpu::Instance) -> Vec<wgpu::Adapter> {
    pollster::block_on(instance.enumerate_adapters(wgpu::Backends::PRIMARY))
        .into_iter()
        .filter(|a| a.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS))
        .collect()
}

/// How many hardware adapters (not software ones) can run Kiln's compute shaders here.
pub fn hardware_adapter_count() -> usize {
    let instance = wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle());
    compute_adapters(&instance).iter().filter(|a| a.get_info().device_type != wgpu::DeviceType::Cpu).count()
}

/// Picks an adapter that can run compute shaders, following `preference`.
pub(crate) fn choose(instance: &wgpu::Instance, preference: &AdapterPreference) -> Result<wgpu::Adapter> {
    let mut adapters = compute_adapters(instance);
    if adapters.is_empty() {
        return Err(GpuError::NoAdapter(
            "no Vulkan, Metal or DX12 adapter with compute shaders was found; on Linux without a \
             GPU install Mesa's lavapipe (Debian: apt-get install mesa-vulkan-drivers)"
                .into(),
        ));
    }
    adapters.sort_by_key(|a| rank(a.get_info().device_type));
    let describe = |list: &[wgpu::Adapter]| {
        list.iter().map(|a| AdapterSummary::from_info(&a.get_info()).to_string()).collect::<Vec<_>>().join("; ")
    };
    let position = match preference {
        AdapterPreference::Best => Some(0),
        AdapterPreference::Hardware => adapters.iter().position(|a| a.get_info().device_type != wgpu::DeviceType::Cpu),
        AdapterPreference::Software => adapters.iter().position(|a| a.get_info().device_type == wgpu::DeviceType::Cpu),
        AdapterPreference::NameContains(text) => {
            let text = text.to_lowercase();
            adapters.iter().position(|a| a.get_info().name.to_lowercase().contains(&text))
        }
        AdapterPreference::NthHardware(n) => adapters
            .iter()
            .enumerate()
            .filter(|(_, a)| a.get_info().device_type != wgpu::DeviceType::Cpu)
            .nth(*n)
            .map(|(i, _)| i),
    };
    match position {
        Some(i) => Ok(adapters.swap_remove(i)),
        None => Err(GpuError::AdapterNotFound {
            wanted: match preference {
                AdapterPreference::NameContains(text) => text.clone(),
                AdapterPreference::NthHardware(n) => format!("hardware adapter number {}", n + 1),
                other => format!("{other:?}").to_lowercase(),
            },
            available: describe(&adapters),
        }),
    }
}

/// Silences the two `error: XDG_RUNTIME_DIR is invalid or not set in the environment.`
/// lines a headless Linux machine (a server, a container, CI) prints when Vulkan starts.
/// They come from Mesa's implicit device-selection layer (`VK_LAYER_MESA_device_select`),
/// which asks Wayland for the desktop's GPU even where no desktop runs; without
/// `XDG_RUNTIME_DIR` there is none to ask, so this turns that layer off
/// (`NODEVICE_SELECT=1`, its own switch) and leaves Kiln's adapter choice as it was. With
/// `XDG_RUNTIME_DIR` set, or `NODEVICE_SELECT` already chosen by the user, it does nothing.
///
/// # Safety
/// It writes the process environment, so call it first thing in `main`, before any other
/// thread runs: no thread may read or write the environment meanwhile.
pub unsafe fn quiet_headless_vulkan() {
    const LAYER_SWITCH: &str = "NODEVICE_SELECT";
    if cfg!(target_os = "linux")
        && std::env::var_os("XDG_RUNTIME_DIR").is_none()
        && std::env::var_os(LAYER_SWITCH).is_none()
    {
        // SAFETY: as the caller promises, no other thread touches the environment.
        unsafe { std::env::set_var(LAYER_SWITCH, "1") };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_override_values() {
        assert_eq!(AdapterPreference::parse(""), AdapterPreference::Best);
        assert_eq!(AdapterPreference::parse("GPU"), AdapterPreference::Hardware);
        assert_eq!(AdapterPreference::parse("software"), AdapterPreference::Software);
        assert_eq!(AdapterPreference::parse(" llvmpipe "), AdapterPreference::NameContains("llvmpipe".into()));
    }

    #[test]
    fn hardware_ranks_before_software() {
        assert!(rank(wgpu::DeviceType::DiscreteGpu) < rank(wgpu::DeviceType::IntegratedGpu));
        assert!(rank(wgpu::DeviceType::IntegratedGpu) < rank(wgpu::DeviceType::Cpu));
        assert!(rank(wgpu::DeviceType::Other) < rank(wgpu::DeviceType::Cpu));
    }
}
