//! The boot test of a disk image (`#test`), planned with every disk image and added to the
//! graph only when asked for (`w4b build --test`, `w4b test LABEL`): an ordinary build
//! never boots anything, and its manifest and roots are the same with or without it.
//!
//! What is checked is merged in layers ([`TestDef::merged`]): the image's `test:`, a
//! hive's `test:` over it, and the command line over both — lists concatenated, a given
//! timeout wins.

use std::path::PathBuf;
use std::sync::Arc;

use w4b_graph::graph::identity;
use w4b_graph::NodeId;

use super::Plan;
use crate::defs::test_spec::TestDef;
use crate::defs::{self, Spanned};
use crate::hive::load::ResolvedHive;
use crate::steps::test::{LastReport, TestStep};
use crate::store::AppStore;
use crate::vmtest::{self, TestSpec};

/// A disk image's boot test as its definitions give it.
#[derive(Clone, Debug)]
pub struct TestPlan {
    /// The image's `test:` with the hive's merged over it.
    pub def: TestDef,
    /// Where each `test:` was written, the image's first.
    pub locations: Vec<String>,
    /// The raw disk the test boots.
    pub disk: NodeId,
    /// The steps that must pass first (`validate`, a hive's `hive-check`).
    pub gates: Vec<NodeId>,
    /// The image file the build exports (`north.img.zst`).
    pub image_file: String,
}

impl TestPlan {
    pub(super) fn of(
        image: &defs::Image,
        hive: Option<&ResolvedHive>,
        disk: NodeId,
        gates: Vec<NodeId>,
        image_file: &str,
    ) -> TestPlan {
        let layers: Vec<&Spanned<TestDef>> = image
            .test
            .iter()
            .chain(hive.and_then(|h| h.test.as_ref()))
            .collect();
        // A hive image is first asked for what its modules run (`modules::boot_checks`)
        // and, on the running system, for the hive checklist its build passed.
        let derived = hive.map(|h| TestDef {
            hive_checklist: Some(true),
            ..crate::modules::boot_checks::boot_checks(&h.config)
        });
        let mut locations: Vec<String> = derived.iter().map(|_| "the hive's modules".to_owned()).collect();
        locations.extend(layers.iter().map(|t| t.span.location().to_string()));
        TestPlan {
            def: layers
                .iter()
                .fold(derived.unwrap_or_default(), |acc, t| acc.merged(t.value.clone())),
            locations,
            disk,
            gates,
            image_file: image_file.to_owned(),
        }
    }
}

/// What the command adds to every image's own test, and how to run them.
#[derive(Clone, Debug)]
pub struct TestRequest {
    /// Merged over the definitions' spec (options, `--spec FILE`).
    pub over: TestDef,
    /// Where `over` came from, for `why` (`w4b test options`).
    pub over_location: String,
    /// How to run the machine; its `log_dir` is replaced by `artifacts`.
    pub vm: vmtest::Options,
    /// Where `NAME.test.json` and `NAME.boot.log` go.
    pub artifacts: PathBuf,
    /// `artifacts` as messages show it.
    pub artifacts_shown: String,
}

/// A test step added to the graph.
pub struct TestNode {
    /// Index into [`Plan::targets`].
    pub target: usize,
    pub node: NodeId,
    /// The raw disk it boots.
    pub disk: NodeId,
    /// The image file the build exports, as the report names it.
    pub image: PathBuf,
    pub spec: TestSpec,
    /// The report of the step's run, when it ran.
    pub last: LastReport,
    /// Where a run writes its report (`NAME.test.json`) and boot log (`NAME.boot.log`).
    pub report_file: PathBuf,
    pub boot_log: PathBuf,
}

/// Adds `#test` after the disk of every target that has one, in target order; targets
/// that build a tar archive get none. Each depends on the workspace's pinned test kernel
/// when it has one ([`Plan::test_kernel`]).
pub fn add_tests(plan: &mut Plan, store: &Arc<AppStore>, req: &TestRequest) -> Vec<TestNode> {
    let mut nodes = Vec::new();
    for (i, t) in plan.targets.iter().enumerate() {
        let Some(tp) = &t.test else { continue };
        let def = tp.def.clone().merged(req.over.clone());
        let spec = def.spec();
        let mut locations = tp.locations.clone();
        if req.over != TestDef::default() {
            locations.push(req.over_location.clone());
        }
        let label = t.label.to_string();
        let last = LastReport::default();
        let step = Arc::new(TestStep {
            store: store.clone(),
            spec: spec.clone(),
            spec_location: (!locations.is_empty()).then(|| locations.join(", ")),
            vm: req.vm.clone(),
            artifacts: req.artifacts.clone(),
            artifacts_shown: req.artifacts_shown.clone(),
            name: t.label.name.clone(),
            image_file: tp.image_file.clone(),
            last: last.clone(),
            pinned_input: plan.test_kernel.map(|_| 1 + tp.gates.len()),
        });
        let mut deps = vec![tp.disk];
        deps.extend(tp.gates.iter().copied());
        // The pinned kernel, for an image whose own cannot boot the virtual machine:
        // which one boots is known only once the disk is read, so the test depends on it
        // whenever the workspace has it.
        deps.extend(plan.test_kernel);
        // The label keeps two targets' tests apart: each writes its own report files.
        let definition = format!(
            "test {label} {} kernel={:?} initrd={:?}",
            serde_json::to_string(&spec).unwrap_or_default(),
            req.vm.kernel,
            req.vm.initrd
        );
        let dep_nodes: Vec<_> = deps.iter().map(|d| plan.graph.node(*d)).collect();
        let id = identity("test", definition.as_bytes(), &dep_nodes);
        let node = plan.graph.add(format!("{label}#test"), id, step, deps);
        nodes.push(TestNode {
            target: i,
            node,
            disk: tp.disk,
            image: req.artifacts.join(&tp.image_file),
            spec,
            last,
            report_file: req.artifacts.join(format!("{}.test.json", t.label.name)),
            boot_log: req.artifacts.join(format!("{}.boot.log", t.label.name)),
        });
    }
    nodes
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defs::test_spec::CommandCheck;

    fn cmd(name: &str) -> CommandCheck {
        CommandCheck {
            name: name.into(),
            run: "true".into(),
            exit: 0,
            stdout_contains: None,
            stdout_regex: None,
            timeout: 60,
        }
    }

    /// `TestPlan::of` as the compiler calls it: the hive's modules' checks, the image's
    /// `test:`, then the hive's, each located where it was written.
    #[test]
    fn a_plan_merges_the_hives_test_over_the_images_and_names_both_places() {
        let dir = tempfile::tempdir().unwrap();
        let write = |rel: &str, text: &str| {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        };
        write("w4b.yaml", "hives: {image: //images:edge}\n");
        write(
            "defs/images/edge.yaml",
            "kind: image\nbase: scratch\ntest:\n  units_active: [ssh.service]\n  timeout: 900\n",
        );
        write(
            "defs/hives/north.yaml",
            &format!(
                "{}test:\n  units_active: [w4b-sensors.service]\n  boot_timeout: 500\n",
                include_str!("../../tests/hives/hive_AbCd1234.yaml")
            ),
        );
        let env = std::collections::BTreeMap::new();
        let ws = defs::Workspace::open(dir.path(), &env).unwrap();
        let loader = defs::Loader::new(ws, env, &[]).unwrap();
        let north = defs::Label::parse("//hives:north", None).unwrap();
        let hive = crate::hive::load::resolve(&loader, &north).unwrap();
        let t = loader.load(&hive.image).unwrap();
        let defs::Target::Image(image) = &t.target else {
            panic!("not an image")
        };
        let plan = TestPlan::of(
            image,
            Some(&hive),
            NodeId::new(0),
            vec![NodeId::new(1)],
            "north.img.zst",
        );
        let spec = plan.def.spec();
        // What the hive's modules run first, then the image's and the hive's units; the
        // image's `ssh.service` is the modules' already and is asked for once.
        let derived = crate::modules::boot_checks::boot_checks(&hive.config);
        let mut units = derived.units_active.clone();
        units.push("w4b-sensors.service".into());
        assert!(derived.units_active.iter().any(|u| u == "ssh.service"));
        assert_eq!(spec.units_active, units);
        assert_eq!(spec.commands, derived.commands);
        assert_eq!((spec.timeout, spec.boot_timeout), (900, 500));
        assert!(
            spec.hive_checklist,
            "a hive's image runs the checklist in the guest"
        );
        assert_eq!(plan.locations.len(), 3, "{:?}", plan.locations);
        assert_eq!(plan.locations[0], "the hive's modules");
        assert!(
            plan.locations[1].starts_with("defs/images/edge.yaml:4:"),
            "{:?}",
            plan.locations
        );
        assert!(
            plan.locations[2].starts_with("defs/hives/north.yaml:"),
            "{:?}",
            plan.locations
        );
        // Without a hive, the image's alone.
        let alone = TestPlan::of(image, None, NodeId::new(0), vec![], "edge.img.zst");
        assert_eq!(alone.def.units_active, ["ssh.service"]);
        assert!(!alone.def.spec().hive_checklist, "a plain image does not");
    }

    #[test]
    fn a_hive_merges_over_its_image_and_the_command_line_over_both() {
        let image = TestDef {
            units_active: vec!["ssh.service".into()],
            commands: vec![cmd("image")],
            timeout: Some(900),
            boot_timeout: Some(400),
            ..TestDef::default()
        };
        let hive = TestDef {
            units_active: vec!["w4b-sensors.service".into()],
            allow_failed_units: vec!["rpi-eeprom-update.service".into()],
            commands: vec![cmd("hive")],
            boot_timeout: Some(500),
            ..TestDef::default()
        };
        let cli = TestDef {
            timeout: Some(1200),
            ..TestDef::default()
        };
        let spec = image.merged(hive).merged(cli).spec();
        assert_eq!(spec.units_active, ["ssh.service", "w4b-sensors.service"]);
        assert_eq!(spec.allow_failed_units, ["rpi-eeprom-update.service"]);
        assert_eq!(
            spec.commands.iter().map(|c| c.name.as_str()).collect::<Vec<_>>(),
            ["image", "hive"]
        );
        assert_eq!((spec.timeout, spec.boot_timeout), (1200, 500));
        // Nothing given: the defaults.
        let none = TestDef::default().spec();
        assert_eq!(none, TestSpec::default());
    }
}
