package devenv

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
)

// kubelet plays the part of the simulated nodes' kubelets for the pods bound
// to them: a bound pod is reported Running and Ready (its only container is
// a pause container; the VM runs in the hypervisor), and a pod being deleted
// is removed, as a kubelet confirms a deletion once its containers stopped.
type kubelet struct {
	client.Client
	nodes sets.Set[string]
}

func newKubelet(cfg *rest.Config, nodes []SimNode) (ctrl.Manager, error) {
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
