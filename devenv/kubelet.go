package devenv

import (
	"context"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	"sigs.k8s.io/controller-runtime/pkg/log"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// kubelet plays the part of the simulated nodes' kubelets for the pods bound
// to them: a bound pod is reported Running and Ready (its only container is
// a pause container; the VM runs in the hypervisor), and a pod being deleted
// is removed, as a kubelet confirms a deletion once its containers stopped.
// It renews the nodes' Leases too (heartbeat).
type kubelet struct {
	client.Client
	nodes sets.Set[string]
}

// newKubelet makes the manager of the simulated kubelets of nodes; the
// Leases of extra (the control-plane nodes of --image) are renewed too.
func newKubelet(cfg *rest.Config, nodes []SimNode, extra []string) (ctrl.Manager, error) {
	mgr, err := ctrl.NewManager(cfg, ctrl.Options{
		Scheme:                 scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Controller:             config.Controller{SkipNameValidation: ptr.To(true)},
	})
	if err != nil {
		return nil, err
	}
	k := &kubelet{Client: mgr.GetClient(), nodes: sets.New[string]()}
	for _, n := range nodes {
		k.nodes.Insert(n.Name)
	}
	if err := mgr.Add(heartbeat{c: mgr.GetClient(), nodes: append(sets.List(k.nodes), extra...)}); err != nil {
		return nil, err
	}
	onOurNodes := predicate.NewPredicateFuncs(func(o client.Object) bool {
		p, ok := o.(*corev1.Pod)
		return ok && k.nodes.Has(p.Spec.NodeName)
	})
	err = ctrl.NewControllerManagedBy(mgr).Named("dev-kubelet").
		For(&corev1.Pod{}, builder.WithPredicates(onOurNodes)).
		Complete(k)
	return mgr, err
}

func (k *kubelet) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	var pod corev1.Pod
	if err := k.Get(ctx, req.NamespacedName, &pod); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	if pod.DeletionTimestamp != nil {
		return ctrl.Result{}, client.IgnoreNotFound(k.Delete(ctx, &pod, client.GracePeriodSeconds(0)))
	}
	if pod.Status.Phase == corev1.PodRunning || !k.nodes.Has(pod.Spec.NodeName) {
		return ctrl.Result{}, nil
	}
	now := metav1.Now()
	pod.Status.Phase = corev1.PodRunning
	pod.Status.StartTime = &now
	pod.Status.HostIP = "127.0.0.1"
	pod.Status.Conditions = []corev1.PodCondition{
		{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodInitialized, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.ContainersReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
		{Type: corev1.PodReady, Status: corev1.ConditionTrue, LastTransitionTime: now},
	}
	pod.Status.ContainerStatuses = nil
	for _, c := range pod.Spec.Containers {
		pod.Status.ContainerStatuses = append(pod.Status.ContainerStatuses, corev1.ContainerStatus{
			Name: c.Name, Image: c.Image, Ready: true, Started: ptr.To(true),
			State: corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: now}},
		})
	}
	return ctrl.Result{}, k.Status().Update(ctx, &pod)
}

// leaseRenewal is how often the simulated kubelets renew their node Leases,
// as kubelets do (every 10 s of a 40 s lease).
const leaseRenewal = 10 * time.Second

// heartbeat renews each simulated node's Lease in kube-node-lease, as its
// kubelet would: kube-controller-manager's node lifecycle controller marks a
// node whose Lease lapses NotReady and taints it, and new VMs would then find
// no node.
type heartbeat struct {
	c     client.Client
	nodes []string
}

func (h heartbeat) Start(ctx context.Context) error {
	t := time.NewTicker(leaseRenewal)
	defer t.Stop()
	for {
		for _, n := range h.nodes {
			if err := h.renew(ctx, n); err != nil && ctx.Err() == nil {
				log.FromContext(ctx).Error(err, "renewing the node lease", "node", n)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (h heartbeat) renew(ctx context.Context, node string) error {
	now := metav1.NewMicroTime(time.Now())
	lease := &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Namespace: corev1.NamespaceNodeLease, Name: node}}
	err := h.c.Get(ctx, client.ObjectKeyFromObject(lease), lease)
	if apierrors.IsNotFound(err) {
		lease.Spec = coordinationv1.LeaseSpec{HolderIdentity: ptr.To(node), LeaseDurationSeconds: ptr.To[int32](40), RenewTime: &now}
		return h.c.Create(ctx, lease)
	}
	if err != nil {
		return err
	}
	lease.Spec.RenewTime = &now
	return h.c.Update(ctx, lease)
}
