//! The Host Compute Service's compute-system document for Berth's Linux
//! utility VM, built from a [`LaunchSpec`]: kernel direct boot (kernel,
//! initramfs, command line), processor count and memory, the data disk on
//! SCSI, the Hyper-V socket service table for the agent's vsock ports, 9p
//! shares, COM1 on a named pipe for the console log, and the network
//! adapter on the machine's HNS endpoint (see [`super::hns_doc`]). Field names are
//! HCS schema 2.1's (as in hcsshim's `internal/hcs/schema2`); the JSON is
//! what `HcsCreateComputeSystem` takes. Also the reply of
//! `HcsGetComputeSystemProperties`. Pure data, tested on Linux.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{HypervisorError, LaunchSpec};
use crate::protocol::{
    ShareFs, StaticNet, API_PORT, CMDLINE_NET, CONTROL_PORT, FORWARD_PORT, FRAMED_API_PORT,
    HOST_SERVICE_PORT, PLAN9_PORT, READY_PORT,
};
use crate::vsock::hyperv_service_guid;

/// SYSTEM and the built-in Administrators (HCS itself needs an elevated
/// caller, so the supervisor is one of them).
pub const ADMINS_SDDL: &str = "D:P(A;;FA;;;SY)(A;;FA;;;BA)";
/// Plan9 share flag: keep Linux ownership and modes in NTFS metadata.
/// (Private in the schema; hcsshim uses the same value.)
pub const PLAN9_LINUX_METADATA: u32 = 0x4;

/// Kernel parameters the Hyper-V guest needs on top of the supervisor's:
/// one 8250 UART (COM1, the console pipe), vsock over hv_sock rather than
/// virtio, no PCI bus (VMBus devices only), and nothing that probes
/// hardware the VM lacks. As hcsshim's LCOW command line.
pub fn hcs_kernel_args(cpus: u32) -> String {
    format!(
        "8250_core.nr_uarts=1 8250_core.skip_txen_test=1 initcall_blacklist=virtio_vsock_init pci=off nr_cpus={cpus} brd.rd_nr=0 pmtmr=0"
    )
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ComputeSystem {
    pub owner: String,
    pub schema_version: Version,
    pub virtual_machine: VirtualMachine,
    /// The VM dies with the supervisor's handle, as QEMU does with
    /// `PR_SET_PDEATHSIG`.
    pub should_terminate_on_last_handle_closed: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Version {
    pub major: u32,
    pub minor: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VirtualMachine {
    /// A guest reboot (our agent's power-off) stops the VM.
    pub stop_on_reset: bool,
    pub chipset: Chipset,
    pub compute_topology: Topology,
    pub devices: Devices,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Chipset {
    pub linux_kernel_direct: LinuxKernelDirect,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct LinuxKernelDirect {
    pub kernel_file_path: String,
    pub init_rd_path: String,
    pub kernel_cmd_line: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Topology {
    pub memory: Memory,
    pub processor: Processor,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Memory {
    #[serde(rename = "SizeInMB")]
    pub size_in_mb: u64,
    /// Backed by pageable host memory, so an idle VM costs what it touches.
    #[serde(rename = "AllowOvercommit")]
    pub allow_overcommit: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Processor {
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Devices {
    /// Keyed by port number from 0 (COM1).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub com_ports: BTreeMap<String, ComPort>,
    /// Keyed by controller name.
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub scsi: BTreeMap<String, Scsi>,
    pub hv_socket: HvSocket,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub plan9: Option<Plan9>,
    /// Keyed by adapter name; a synthetic NIC (hv_netvsc in the guest).
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub network_adapters: BTreeMap<String, NetworkAdapter>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAdapter {
    /// The HNS endpoint the NIC is plugged into.
    #[serde(rename = "EndpointId")]
    pub endpoint_id: String,
    #[serde(rename = "MacAddress")]
    pub mac_address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ComPort {
    pub named_pipe: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Scsi {
    /// Keyed by LUN.
    pub attachments: BTreeMap<String, Attachment>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Attachment {
    /// `VirtualDisk`: a VHD or VHDX file.
    #[serde(rename = "Type")]
    pub kind: String,
    pub path: String,
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HvSocket {
    pub hv_socket_config: HvSocketSystemConfig,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HvSocketSystemConfig {
    pub default_bind_security_descriptor: String,
    pub default_connect_security_descriptor: String,
    /// Keyed by service GUID.
    pub service_table: BTreeMap<String, HvSocketServiceConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HvSocketServiceConfig {
    pub bind_security_descriptor: String,
    pub connect_security_descriptor: String,
    pub allow_wildcard_binds: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Plan9 {
    pub shares: Vec<Plan9Share>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Plan9Share {
    pub name: String,
    /// What the guest passes as `aname` when it mounts the share.
    pub access_name: String,
    pub path: String,
    pub port: u32,
    pub flags: u32,
}

/// The Windows-side names the document refers to.
#[derive(Debug, Clone)]
pub struct HcsInputs {
    /// `Owner` in HCS's listings (`hcsdiag list`).
    pub owner: String,
    /// The data disk as a VHD (see [`super::vhd`]), if there is one.
    pub disk_vhd: Option<String>,
    /// The named pipe COM1 connects to.
    pub console_pipe: String,
    /// The HNS endpoint for outbound networking and the guest's address on
    /// it; required when the spec asks for a network.
    pub network: Option<HcsNetwork>,
}

/// A machine's NIC: its HNS endpoint and what the guest configures on eth0.
#[derive(Debug, Clone)]
pub struct HcsNetwork {
    pub endpoint_id: String,
    /// As HNS writes it (`02-62-65-0A-1B-2C`).
    pub mac_address: String,
    pub guest: StaticNet,
}

/// The vsock ports of the agent and the host, and who may use them: the
/// host connects to the guest's control, forward and API ports and binds
/// the host-service and ready ports the guest connects to.
pub fn agent_service_ports() -> [u32; 6] {
    [
        CONTROL_PORT,
        FORWARD_PORT,
        HOST_SERVICE_PORT,
        READY_PORT,
        API_PORT,
        FRAMED_API_PORT,
    ]
}

/// Checks what HCS would reject late: the boot files must exist, the
/// numbers must be in range, shares must be 9p. The backend calls it before
/// it asks Windows for anything (the data disk, the network).
pub fn check_spec(spec: &LaunchSpec) -> Result<(), HypervisorError> {
    for (what, path) in [("kernel", &spec.kernel), ("initrd", &spec.initrd)] {
        if !path.is_file() {
            return Err(HypervisorError::Missing {
                what: format!("the {what} {}", path.display()),
                hint: "build the guest image (`berth machine init` does) or fix the machine's kernel/initrd setting".into(),
            });
        }
    }
    if spec.cpus == 0 || spec.memory_mib < 256 {
        return Err(HypervisorError::Unsupported(
            "fewer than 1 CPU or 256 MiB of memory",
        ));
    }
    // HCS shares directories over Plan 9 only.
    if spec.share_fs == Some(ShareFs::Virtiofs) {
        return Err(HypervisorError::Unsupported("virtiofs shares on Windows"));
    }
    Ok(())
}

/// The compute system for `spec` (checked with [`check_spec`]).
pub fn compute_system(
    spec: &LaunchSpec,
    inputs: &HcsInputs,
) -> Result<ComputeSystem, HypervisorError> {
    check_spec(spec)?;
    let network = match (&inputs.network, spec.outbound_network) {
        (Some(n), true) => Some(n),
        (None, false) => None,
        // The backend makes the endpoint exactly when the spec asks for one.
        (None, true) => {
            return Err(HypervisorError::Unsupported(
                "outbound networking without an HNS endpoint",
            ))
        }
        (Some(_), false) => {
            return Err(HypervisorError::Unsupported(
                "an HNS endpoint for a machine without a network",
            ))
        }
    };
    let service = HvSocketServiceConfig {
        bind_security_descriptor: ADMINS_SDDL.into(),
        connect_security_descriptor: ADMINS_SDDL.into(),
        allow_wildcard_binds: true,
    };
    let service_table = agent_service_ports()
        .into_iter()
        .map(|port| (hyperv_service_guid(port), service.clone()))
        .collect();
    let mut scsi = BTreeMap::new();
    if let Some(vhd) = &inputs.disk_vhd {
        scsi.insert(
            "0".to_string(),
            Scsi {
                attachments: BTreeMap::from([(
                    "0".to_string(),
                    Attachment {
                        kind: "VirtualDisk".into(),
                        path: vhd.clone(),
                        read_only: false,
                    },
                )]),
            },
        );
    }
    let plan9 = (!spec.shares.is_empty()).then(|| Plan9 {
        shares: spec
            .shares
            .iter()
            .map(|(tag, share)| Plan9Share {
                name: tag.clone(),
                access_name: tag.clone(),
                path: share.host.display().to_string(),
                port: PLAN9_PORT,
                flags: PLAN9_LINUX_METADATA,
            })
            .collect(),
    });
    Ok(ComputeSystem {
        owner: inputs.owner.clone(),
        schema_version: Version { major: 2, minor: 1 },
        virtual_machine: VirtualMachine {
            stop_on_reset: true,
            chipset: Chipset {
                linux_kernel_direct: LinuxKernelDirect {
                    kernel_file_path: win_path(&spec.kernel),
                    init_rd_path: win_path(&spec.initrd),
                    kernel_cmd_line: kernel_cmd_line(spec, network),
                },
            },
            compute_topology: Topology {
                memory: Memory {
                    size_in_mb: spec.memory_mib,
                    allow_overcommit: true,
                },
                processor: Processor { count: spec.cpus },
            },
            devices: Devices {
                com_ports: BTreeMap::from([(
                    "0".to_string(),
                    ComPort {
                        named_pipe: inputs.console_pipe.clone(),
                    },
                )]),
                scsi,
                hv_socket: HvSocket {
                    hv_socket_config: HvSocketSystemConfig {
                        default_bind_security_descriptor: ADMINS_SDDL.into(),
                        default_connect_security_descriptor: ADMINS_SDDL.into(),
                        service_table,
                    },
                },
                plan9,
                network_adapters: network
                    .map(|n| {
                        BTreeMap::from([(
                            "eth0".to_string(),
                            NetworkAdapter {
                                endpoint_id: n.endpoint_id.clone(),
                                mac_address: n.mac_address.clone(),
                            },
                        )])
                    })
                    .unwrap_or_default(),
            },
        },
        should_terminate_on_last_handle_closed: true,
    })
}

/// The supervisor's command line with the shares (as 9p), eth0's fixed
/// address when there is a network (HNS runs no DHCP server on NAT), and
/// the Hyper-V guest's own parameters.
fn kernel_cmd_line(spec: &LaunchSpec, network: Option<&HcsNetwork>) -> String {
    let mut line = super::with_shares(&spec.cmdline, &spec.shares, ShareFs::NineP);
    if let Some(n) = network {
        line.push_str(&format!(" {CMDLINE_NET}={}", n.guest.cmdline_value()));
    }
    format!("{line} {}", hcs_kernel_args(spec.cpus))
}

fn win_path(path: &Path) -> String {
    path.display().to_string()
}

/// The compute system's id: `berth-<machine>`, the machine being the name
/// of the directory the spec's files live in.
pub fn system_id(spec: &LaunchSpec) -> Result<String, HypervisorError> {
    let name = spec
        .console_log
        .parent()
        .and_then(Path::file_name)
        .and_then(|n| n.to_str())
        .filter(|n| crate::machine::MachineConfig::new(n).is_ok())
        .ok_or(HypervisorError::Unsupported(
            "a machine directory whose name is not a machine name",
        ))?;
    Ok(format!("berth-{name}"))
}

/// What `HcsGetComputeSystemProperties` returns with an empty query (the
/// fields Berth reads; everything else is ignored).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SystemProperties {
    #[serde(rename = "Id", default)]
    pub id: String,
    /// The VM's GUID, which Hyper-V sockets address it by.
    #[serde(rename = "RuntimeId", default)]
    pub runtime_id: String,
    #[serde(rename = "State", default)]
    pub state: String,
    #[serde(rename = "Stopped", default)]
    pub stopped: bool,
    #[serde(rename = "ExitType", default)]
    pub exit_type: String,
}

impl SystemProperties {
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }

    /// `Some(description)` once the VM has stopped.
    pub fn exited(&self) -> Option<String> {
        let stopped = self.stopped || self.state.eq_ignore_ascii_case("stopped");
        stopped.then(|| match self.exit_type.as_str() {
            "" => "the VM stopped".to_string(),
            t => format!("the VM stopped ({t})"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::machine::{Accel, Share};
    use serde_json::json;

    fn spec(dir: &Path) -> LaunchSpec {
        let kernel = dir.join("vmlinuz");
        let initrd = dir.join("initrd.img");
        std::fs::write(&kernel, b"k").expect("kernel");
        std::fs::write(&initrd, b"i").expect("initrd");
        let mdir = dir.join("dev-1");
        LaunchSpec {
            kernel,
            initrd,
            cmdline: "console=ttyS0 rdinit=/init".into(),
            cpus: 2,
            memory_mib: 2048,
            disk: Some(mdir.join("data.img")),
            cid: 3,
            vhost_socket: mdir.join("vhost.sock"),
            vsock_socket: mdir.join("vsock.sock"),
            console_log: mdir.join("console.log"),
            vmm_log: mdir.join("machine.log"),
            shares: vec![(
                "berthshare0".into(),
                Share {
                    host: r"C:\Users\me\src".into(),
                    guest: "/c/Users/me/src".into(),
                },
            )],
            share_fs: None,
            hostfwd: vec![],
            accel: Accel::Auto,
            arch: crate::machine::GuestArch::host(),
            outbound_network: false,
        }
    }

    fn inputs() -> HcsInputs {
        HcsInputs {
            owner: "berth".into(),
            disk_vhd: Some(r"C:\m\data.vhd".into()),
            console_pipe: r"\\.\pipe\berth-dev-1-console".into(),
            network: None,
        }
    }

    fn hns_network() -> HcsNetwork {
        HcsNetwork {
            endpoint_id: "9e0c1d2e-0000-4000-8000-000000000002".into(),
            mac_address: "02-62-65-12-34-56".into(),
            guest: StaticNet::parse("172.29.0.5/24,172.29.0.1,192.168.1.1").expect("net"),
        }
    }

    #[test]
    fn document_uses_the_schema_field_names() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = spec(tmp.path());
        let doc = serde_json::to_value(compute_system(&s, &inputs()).expect("doc")).expect("json");
        let svc = json!({
            "BindSecurityDescriptor": ADMINS_SDDL,
            "ConnectSecurityDescriptor": ADMINS_SDDL,
            "AllowWildcardBinds": true
        });
        let expected = json!({
            "Owner": "berth",
            "SchemaVersion": {"Major": 2, "Minor": 1},
            "ShouldTerminateOnLastHandleClosed": true,
            "VirtualMachine": {
                "StopOnReset": true,
                "Chipset": {"LinuxKernelDirect": {
                    "KernelFilePath": s.kernel.display().to_string(),
                    "InitRdPath": s.initrd.display().to_string(),
                    "KernelCmdLine": "console=ttyS0 rdinit=/init berth.shares=berthshare0:/c/Users/me/src:9p 8250_core.nr_uarts=1 8250_core.skip_txen_test=1 initcall_blacklist=virtio_vsock_init pci=off nr_cpus=2 brd.rd_nr=0 pmtmr=0"
                }},
                "ComputeTopology": {
                    "Memory": {"SizeInMB": 2048, "AllowOvercommit": true},
                    "Processor": {"Count": 2}
                },
                "Devices": {
                    "ComPorts": {"0": {"NamedPipe": r"\\.\pipe\berth-dev-1-console"}},
                    "Scsi": {"0": {"Attachments": {"0": {"Type": "VirtualDisk", "Path": r"C:\m\data.vhd"}}}},
                    "HvSocket": {"HvSocketConfig": {
                        "DefaultBindSecurityDescriptor": ADMINS_SDDL,
                        "DefaultConnectSecurityDescriptor": ADMINS_SDDL,
                        "ServiceTable": {
                            "00000400-facb-11e6-bd58-64006a7986d3": svc,
                            "00000401-facb-11e6-bd58-64006a7986d3": svc,
                            "00000402-facb-11e6-bd58-64006a7986d3": svc,
                            "00000403-facb-11e6-bd58-64006a7986d3": svc,
                            "00000947-facb-11e6-bd58-64006a7986d3": svc,
                            "00000948-facb-11e6-bd58-64006a7986d3": svc
                        }
                    }},
                    "Plan9": {"Shares": [{
                        "Name": "berthshare0",
                        "AccessName": "berthshare0",
                        "Path": r"C:\Users\me\src",
                        "Port": 564,
                        "Flags": 4
                    }]}
                }
            }
        });
        assert_eq!(doc, expected);
    }

    #[test]
    fn optional_devices_are_left_out() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = spec(tmp.path());
        s.shares.clear();
        let mut i = inputs();
        i.disk_vhd = None;
        let doc = serde_json::to_value(compute_system(&s, &i).expect("doc")).expect("json");
        let devices = &doc["VirtualMachine"]["Devices"];
        assert!(devices.get("Scsi").is_none(), "{devices}");
        assert!(devices.get("Plan9").is_none(), "{devices}");
        assert!(devices.get("HvSocket").is_some());
    }

    #[test]
    fn bad_specs_fail_before_hcs_sees_them() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = spec(tmp.path());
        s.kernel = tmp.path().join("absent");
        let err = compute_system(&s, &inputs()).expect_err("no kernel");
        assert!(err.to_string().contains("kernel"), "{err}");
        let mut s = spec(tmp.path());
        s.memory_mib = 64;
        assert!(compute_system(&s, &inputs()).is_err());
        let mut s = spec(tmp.path());
        s.outbound_network = true;
        let err = compute_system(&s, &inputs()).expect_err("no endpoint made");
        assert!(err.to_string().contains("outbound networking"), "{err}");
        let mut i = inputs();
        i.network = Some(hns_network());
        let err = compute_system(&spec(tmp.path()), &i).expect_err("endpoint unasked");
        assert!(err.to_string().contains("without a network"), "{err}");
        let mut s = spec(tmp.path());
        s.share_fs = Some(ShareFs::Virtiofs);
        let err = compute_system(&s, &inputs()).expect_err("Plan 9 only");
        assert!(err.to_string().contains("virtiofs"), "{err}");
    }

    #[test]
    fn the_network_adapter_is_the_hns_endpoint_and_eth0_is_on_the_command_line() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let mut s = spec(tmp.path());
        s.outbound_network = true;
        let mut i = inputs();
        i.network = Some(hns_network());
        let doc = serde_json::to_value(compute_system(&s, &i).expect("doc")).expect("json");
        assert_eq!(
            doc["VirtualMachine"]["Devices"]["NetworkAdapters"],
            json!({"eth0": {
                "EndpointId": "9e0c1d2e-0000-4000-8000-000000000002",
                "MacAddress": "02-62-65-12-34-56"
            }})
        );
        let line = doc["VirtualMachine"]["Chipset"]["LinuxKernelDirect"]["KernelCmdLine"]
            .as_str()
            .expect("cmdline");
        assert!(
            line.contains(" berth.net=172.29.0.5/24,172.29.0.1,192.168.1.1 "),
            "{line}"
        );
        // What the agent reads back.
        let value = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("berth.net="))
            .expect("key");
        assert_eq!(StaticNet::parse(value), Some(hns_network().guest));
        // Without a network: no adapter, no address.
        let doc = serde_json::to_value(compute_system(&spec(tmp.path()), &inputs()).expect("doc"))
            .expect("json");
        assert!(doc["VirtualMachine"]["Devices"]
            .get("NetworkAdapters")
            .is_none());
        assert!(!doc.to_string().contains("berth.net"));
    }

    #[test]
    fn system_id_is_the_machine_name() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let s = spec(tmp.path());
        assert_eq!(system_id(&s).expect("id"), "berth-dev-1");
        let mut s = spec(tmp.path());
        s.console_log = "/bad name/console.log".into();
        assert!(system_id(&s).is_err());
    }

    #[test]
    fn properties_reply() {
        let running = SystemProperties::parse(
            r#"{"Id":"berth-dev-1","SystemType":"VirtualMachine","Owner":"berth","RuntimeId":"a42e7cda-d03f-480c-9cc2-a4de20abb878","State":"Running","Stopped":false}"#,
        )
        .expect("parse");
        assert_eq!(running.runtime_id, "a42e7cda-d03f-480c-9cc2-a4de20abb878");
        assert_eq!(running.exited(), None);
        let stopped = SystemProperties::parse(
            r#"{"Id":"berth-dev-1","State":"Stopped","Stopped":true,"ExitType":"GracefulExit"}"#,
        )
        .expect("parse");
        assert_eq!(
            stopped.exited().as_deref(),
            Some("the VM stopped (GracefulExit)")
        );
        assert!(SystemProperties::parse("not json").is_err());
    }
}
