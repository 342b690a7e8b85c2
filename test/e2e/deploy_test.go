package e2e

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// deployed is `novacron dev --lab --image`: the operator and novacron-scheduler
// as the shipped Deployments run them (two replicas each, in podman, with the
// shipped RBAC and certificates), against real libvirtd + QEMU lab nodes
// reached over qemu+tls.
type deployed struct {
	*dev
	conf string
}

func startDeployed(t *testing.T) *deployed {
	if os.Getenv("NOVACRON_DEPLOY") != "1" {
		t.Skip("runs the shipped image and manifests: `make test-deploy` (root; builds the image with podman, starts lab nodes)")
	}
	image := os.Getenv("NOVACRON_IMAGE")
	require.NotEmpty(t, image, "NOVACRON_IMAGE: the image `make docker-build` made (make test-deploy sets it)")
	d := &deployed{dev: startDev(t, "--lab", "--nodes", "2", "--image", image)}
	d.conf = filepath.Join(d.root, "hack", "containers.conf")
	t.Cleanup(func() {
		if !t.Failed() || d.cmd.ProcessState != nil {
			return
		}
		// What a failure needs to be understood, while it is all still up.
		for _, line := range []string{"kubectl get vm,vmmigration,pods,leases -A -o wide", "kubectl get vm -A -o yaml", "kubectl get events -A --sort-by=.lastTimestamp"} {
			out, _ := d.command(context.Background(), line).CombinedOutput()
			t.Logf("%s:\n%s", line, out)
		}
		for _, c := range d.containers(t, "") {
			logs := strings.Split(d.podman(t, "logs", c), "\n")
			t.Logf("podman logs %s (last lines):\n%s", c, strings.Join(logs[max(0, len(logs)-40):], "\n"))
		}
		// Stopped as a user would, so that its containers and lab nodes go.
		d.stop(t)
	})
	return d
}

func (d *deployed) podman(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command("podman", args...)
	cmd.Env = append(os.Environ(), "CONTAINERS_CONF="+d.conf)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	require.NoError(t, cmd.Run(), "podman %s: %s", strings.Join(args, " "), errb.String())
	return strings.TrimSpace(out.String() + errb.String())
}

// containers are the containers of the pods whose name starts with prefix.
func (d *deployed) containers(t *testing.T, prefix string) []string {
	return strings.Fields(d.podman(t, "ps", "-a", "--format", "{{.Names}}", "--filter", "label=io.novacron.dev", "--filter", "name=^ncdev-"+prefix))
}

// until polls cond, in the test's goroutine (cond may fail the test), until
// it holds or timeout passes.
func until(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, timeout)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// leader is the pod holding a leader-election Lease in novacron-system, once
// the holder is a pod that exists (after a rollout the Lease can name an old
// one until a new pod takes it).
func (d *deployed) leader(t *testing.T, lease string) string {
	t.Helper()
	var pod string
	until(t, time.Minute, "a running pod holds lease "+lease, func() bool {
		holder := strings.TrimSpace(d.kubectl(t, "kubectl -n novacron-system get lease "+lease+" -o jsonpath='{.spec.holderIdentity}'"))
		var ok bool
		pod, _, ok = strings.Cut(holder, "_")
		return ok && len(d.containers(t, pod)) > 0
	})
	return pod
}

// rbacRefusals fails the test for each RBAC refusal in the logs of the
// components' containers as they are now (restarted ones keep their logs).
func (d *deployed) rbacRefusals(t *testing.T) {
	t.Helper()
	for _, c := range d.containers(t, "") {
		for _, l := range strings.Split(d.podman(t, "logs", c), "\n") {
			if rbacDenied.MatchString(l) {
				t.Errorf("%s: %s", c, l)
			}
		}
	}
}

// kill kills a pod's containers with SIGKILL, as a node losing power would;
// the pod runner starts them again, as a kubelet does.
func (d *deployed) kill(t *testing.T, pod string) {
	t.Helper()
	names := d.containers(t, pod)
	require.NotEmpty(t, names, "containers of %s", pod)
	d.podman(t, append([]string{"kill", "--signal", "KILL"}, names...)...)
}

// domains lists the domains of every lab node (running or not), by node.
func (d *deployed) domains(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	for _, n := range []string{"compute-1", "gpu-1"} {
		uri := strings.TrimSpace(d.kubectl(t, "test/lab/lab.sh uri novacron-dev-"+n))
		list := d.kubectl(t, fmt.Sprintf("virsh -c '%s' list --all --name", uri))
		out[n] = strings.Fields(list)
	}
	return out
}

// domainEvents records the libvirt events of a lab node's domains from now
// until the returned function is called, which returns them.
func (d *deployed) domainEvents(t *testing.T, node string) func() string {
	t.Helper()
	uri := strings.TrimSpace(d.kubectl(t, "test/lab/lab.sh uri novacron-dev-"+node))
	cmd := exec.Command("virsh", "-c", uri, "event", "--all", "--loop", "--timestamp")
	out := &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	// virsh says nothing until an event comes: a domain defined and
	// undefined on the node shows that it listens.
	probe := "<domain type='qemu'><name>novacron-event-probe</name><memory>65536</memory><os><type>hvm</type></os></domain>"
	d.kubectl(t, fmt.Sprintf("echo \"%s\" > %s/probe.xml && virsh -c '%s' define %s/probe.xml && virsh -c '%s' undefine novacron-event-probe", probe, d.tmp, uri, d.tmp, uri))
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "novacron-event-probe") }, 30*time.Second, 50*time.Millisecond, "virsh event listening")
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	})
	return func() string {
		stopped = true
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		return out.String()
	}
}

// guestTicking waits until the lab guest of a domain's latest start has
// booted and ticked twice on its serial console (test/lab/lab.sh's guest),
// by when it listens for the power button. Both logs are kept across
// starts: QEMU's log says how many starts there were, the serial log how
// many guests booted.
func (d *deployed) guestTicking(t *testing.T, domain string) {
	t.Helper()
	lab := os.Getenv("NOVACRON_LAB_DIR")
	if lab == "" {
		lab = "/var/tmp/novacron-lab"
	}
	pattern := filepath.Join(lab, "nodes", "novacron-dev-*", "log", "qemu", domain+"-serial.log")
	require.Eventually(t, func() bool {
		logs, _ := filepath.Glob(pattern)
		for _, l := range logs {
			serial, err1 := os.ReadFile(l)
			qemu, err2 := os.ReadFile(strings.TrimSuffix(l, "-serial.log") + ".log")
			if err1 != nil || err2 != nil {
				continue
			}
			boots := bytes.Count(serial, []byte("NOVACRON-GUEST-BOOT"))
			i := bytes.LastIndex(serial, []byte("NOVACRON-GUEST-BOOT"))
			if boots > 0 && boots == bytes.Count(qemu, []byte("starting up libvirt")) && bytes.Count(serial[i:], []byte("NOVACRON-TICK")) >= 2 {
				return true
			}
		}
		return false
	}, 2*time.Minute, 200*time.Millisecond, "the guest of %s's latest start ticking (%s)", domain, pattern)
}

// onNodes is the nodes a domain is defined on.
func onNodes(all map[string][]string, domain string) []string {
	var nodes []string
	for n, doms := range all {
		for _, dom := range doms {
			if dom == domain {
				nodes = append(nodes, n)
			}
		}
	}
	return nodes
}

// rbacDenied is how the API server words an RBAC refusal.
var rbacDenied = regexp.MustCompile(`forbidden: User ".*" cannot`)

// The shipped image and manifests, run as a platform team installs them:
// VMs start on qemu+tls lab nodes through the containerised operator and
// scheduler, which hold only the shipped RBAC; killing either leader in the
// middle of work loses nothing and makes nothing twice; deleting a namespace
// finishes.
func TestTheShippedDeploymentRunsVMs(t *testing.T) {
	d := startDeployed(t)

	// As shipped: the operator runs as 65532 with a read-only root and no
	// capabilities, two replicas of each component.
	ops := d.containers(t, "novacron-controller-manager-")
	require.Len(t, ops, 2)
	require.Len(t, d.containers(t, "novacron-scheduler-"), 2)
	assert.Equal(t, "65532:65532 true []", d.podman(t, "inspect", "--format", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}} {{.EffectiveCaps}}", ops[0]))
	until(t, time.Minute, "both webhook servers are ready endpoints of the webhook Service", func() bool {
		return strings.Contains(d.kubectl(t, "kubectl -n novacron-system get endpointslices -l kubernetes.io/service-name=novacron-webhook-service -o jsonpath='{.items[*].endpoints[*].conditions.ready}'"), "true true")
	})

	// The operator's leader dies just after a create (a VM with cloud-init,
	// whose ISO is staged in /tmp): the other replica takes over and the VM
	// runs once.
	opLeader := d.leader(t, "novacron-operator.novacron.io")
	d.kubectl(t, "kubectl apply -f manifests/samples/vm-cloud-init.yaml")
	killed := time.Now()
	d.kill(t, opLeader)
	d.kubectl(t, "kubectl wait --for=jsonpath='{.status.phase}'=Running vm/cloud-init-vm --timeout=110s")
	t.Logf("operator leader %s killed; VM Running %s later, leader now %s", opLeader, time.Since(killed).Round(100*time.Millisecond), d.leader(t, "novacron-operator.novacron.io"))
	assert.Len(t, onNodes(d.domains(t), "default_cloud-init-vm"), 1, "one domain")

	// A graceful stop once the guest listens for the power button (a
	// press before that is lost, as on real hardware).
	d.guestTicking(t, "default_cloud-init-vm")
	d.kubectl(t, `kubectl patch vm cloud-init-vm --type merge -p '{"spec":{"running":false}}'`)
	d.kubectl(t, "kubectl wait --for=jsonpath='{.status.phase}'=Stopped vm/cloud-init-vm --timeout=110s")
	d.kubectl(t, `kubectl patch vm cloud-init-vm --type merge -p '{"spec":{"running":true}}'`)
	d.kubectl(t, "kubectl wait --for=jsonpath='{.status.phase}'=Running vm/cloud-init-vm --timeout=110s")

	// Upgrade: both Deployments roll to a new image while the VM runs, the
	// CRDs applied over the installed ones. Its hypervisor sees nothing
	// happen to its domain (libvirt reports every change of a domain as an
	// event), and the new operator still runs VMs.
	// The first pods' logs go with them: read them now.
	d.rbacRefusals(t)
	nodes := onNodes(d.domains(t), "default_cloud-init-vm")
	require.Len(t, nodes, 1)
	events := d.domainEvents(t, nodes[0])
	d.kubectl(t, "kubectl apply --server-side -f manifests/crd/bases")
	d.podman(t, "tag", os.Getenv("NOVACRON_IMAGE"), "novacron/operator:upgraded")
	d.kubectl(t, "kubectl -n novacron-system set image deployment/novacron-controller-manager manager=novacron/operator:upgraded")
	d.kubectl(t, "kubectl -n novacron-system set image deployment/novacron-scheduler scheduler=novacron/operator:upgraded")
	d.kubectl(t, "kubectl -n novacron-system rollout status deployment/novacron-controller-manager --timeout=110s")
	d.kubectl(t, "kubectl -n novacron-system rollout status deployment/novacron-scheduler --timeout=110s")
	// The old pods stop within their grace period.
	until(t, time.Minute, "four pods, all of the new image, and their containers only", func() bool {
		images := d.kubectl(t, "kubectl -n novacron-system get pods -o jsonpath='{.items[*].spec.containers[*].image}'")
		return images+" " == strings.Repeat("novacron/operator:upgraded ", 4) && len(d.containers(t, "novacron-")) == 4
	})

	// The scheduler's leader dies: the other places the next VM.
	schedLeader := d.leader(t, "novacron-scheduler")
	d.kill(t, schedLeader)
	d.kubectl(t, "kubectl apply -f manifests/samples/vm-basic.yaml")
	d.kubectl(t, "kubectl wait --for=jsonpath='{.status.phase}'=Running vm/my-vm --timeout=110s")
	assert.Len(t, onNodes(d.domains(t), "default_my-vm"), 1, "one domain")

	// A snapshot of the running guest, and a restore of it (the VM stopped,
	// reverted, started again), as the README does them.
	d.guestTicking(t, "default_my-vm")
	d.kubectl(t, "kubectl apply -f manifests/samples/snapshot.yaml")
	d.kubectl(t, "kubectl wait vmsnap/my-vm-before-upgrade --for=jsonpath='{.status.phase}'=Ready --timeout=110s")
	d.kubectl(t, "kubectl apply -f manifests/samples/restore.yaml")
	d.kubectl(t, "kubectl wait vmrestore/my-vm-rollback --for=jsonpath='{.status.phase}'=Succeeded --timeout=110s")
	d.kubectl(t, "kubectl wait vm/my-vm --for=jsonpath='{.status.phase}'=Running --timeout=110s")
	assert.NotContains(t, events(), "default_cloud-init-vm", "no change to the running VM's domain through the upgrade")

	// The operator's leader dies mid-migration (encrypted, over QEMU's
	// migration TLS, slowed down so that it is under way): the new leader
	// follows the job libvirt carries on to its end; the VM runs on one node.
	d.kubectl(t, "kubectl apply -f manifests/samples/vm-live-migration.yaml")
	d.kubectl(t, "kubectl wait --for=jsonpath='{.status.phase}'=Running vm/my-vm-migratable --timeout=110s")
	d.guestTicking(t, "default_my-vm-migratable")
	d.kubectl(t, `kubectl patch vm my-vm-migratable --type merge -p '{"spec":{"migrationPolicy":{"bandwidth":"80Mbps"}}}'`)
	from := d.kubectl(t, "kubectl get vm my-vm-migratable -o jsonpath='{.status.nodeName}'")
	opLeader = d.leader(t, "novacron-operator.novacron.io")
	d.kubectl(t, "kubectl apply -f manifests/samples/migration.yaml")
	d.kubectl(t, "kubectl wait --for=jsonpath='{.status.phase}'=Running virtualmachinemigration/my-vm-migratable-move --timeout=110s")
	d.kill(t, opLeader)
	d.kubectl(t, "kubectl wait --for=jsonpath='{.status.phase}'=Succeeded virtualmachinemigration/my-vm-migratable-move --timeout=110s")
	to := d.kubectl(t, "kubectl get vm my-vm-migratable -o jsonpath='{.status.nodeName}'")
	assert.NotEqual(t, from, to, "it moved")
	assert.Equal(t, []string{to}, onNodes(d.domains(t), "default_my-vm-migratable"), "its domain is on the target only")

	// A tenant's namespace deleted with its VM running: it finishes, and
	// the domain goes with it.
	d.kubectl(t, `kubectl apply -f - <<'EOF'
apiVersion: v1
kind: Namespace
metadata: {name: tenant-a}
---
apiVersion: novacron.io/v1alpha1
kind: VirtualMachine
metadata: {name: app, namespace: tenant-a, labels: {owner: tenant-a}}
spec:
  template:
    spec:
      resources: {cpu: 1, memory: 256Mi}
      image: {source: "marketplace://ubuntu-22.04-lts"}
EOF`)
	d.kubectl(t, "kubectl -n tenant-a wait --for=jsonpath='{.status.phase}'=Running vm/app --timeout=110s")
	d.kubectl(t, "kubectl delete namespace tenant-a --timeout=110s")
	assert.Empty(t, onNodes(d.domains(t), "tenant-a_app"), "its domain is gone")

	d.kubectl(t, "kubectl delete vm cloud-init-vm my-vm my-vm-migratable --timeout=110s")
	all := d.domains(t)
	for _, vm := range []string{"cloud-init-vm", "my-vm", "my-vm-migratable"} {
		assert.Empty(t, onNodes(all, "default_"+vm), "%s's domain is gone", vm)
	}

	// Only the shipped RBAC, and it was enough.
	d.rbacRefusals(t)

	d.stop(t)
	assert.Empty(t, d.containers(t, ""), "novacron dev removed its containers")
	assert.Empty(t, d.podman(t, "network", "ls", "-q", "--filter", "label=io.novacron.dev"), "and their networks")
}

// The README's workflow, as written, against the shipped deployment on lab
// nodes: the same commands create, stop and start, snapshot and restore,
// live-migrate and delete real guests.
func TestTheShippedDeploymentPassesTheReadme(t *testing.T) {
	d := startDeployed(t)
	metrics := ""
	d.readme(t, readme{
		checks:  labReadmeChecks(),
		notHere: []string{"cluster", "simulated"},
		rewrite: func(line string) string {
			if !strings.Contains(line, "127.0.0.1:8080") {
				return line
			}
			// A scrape as Prometheus makes it: at an endpoint of the
			// operator's metrics Service.
			if metrics == "" {
				metrics = strings.TrimSpace(d.kubectl(t, "kubectl -n novacron-system get endpointslices -l kubernetes.io/service-name=novacron-controller-manager-metrics -o jsonpath='{.items[0].endpoints[0].addresses[0]}'"))
				require.NotEmpty(t, metrics, "the metrics Service has an endpoint")
			}
			return strings.ReplaceAll(line, "127.0.0.1", metrics)
		},
		// A guest ignores the power button until it has booted, as real
		// hardware does; a user waits for it to come up before stopping it
		// (the restore stops it too), and snapshots a guest that is up.
		before: map[string]func(){
			`kubectl patch vm my-vm --type merge -p '{"spec":{"running":false}}'`: func() { d.guestTicking(t, "default_my-vm") },
			"kubectl apply -f manifests/samples/snapshot.yaml":                    func() { d.guestTicking(t, "default_my-vm") },
			"kubectl apply -f manifests/samples/restore.yaml":                     func() { d.guestTicking(t, "default_my-vm") },
		},
	})
	d.rbacRefusals(t)
	d.stop(t)
	assert.Empty(t, d.containers(t, ""), "novacron dev removed its containers")
}

// labReadmeChecks are readmeChecks where lab nodes differ from simulated
// ones: two nodes with the lab host's CPU, a real cloud-init disk, a
// migration that happens.
func labReadmeChecks() map[string][]check {
	c := readmeChecks()
	c["kubectl get nodes"] = []check{matches(`compute-1\s+Ready\s`, `gpu-1\s+Ready\s`)}
	c["kubectl get hv"] = []check{matches(`compute-1\s+qemu\+tls://\S+\s+True`, `gpu-1\s+qemu\+tls://\S+\s+True`)}
	c[`kubectl get vm cloud-init-vm -o jsonpath='{.status.conditions[?(@.type=="CloudInit")].message}'`] = []check{contains("cloud-init NoCloud disk attached")}
	c["kubectl describe vmim my-vm-migratable-move"] = []check{matches(`Phase:\s+Succeeded`)}
	return c
}
