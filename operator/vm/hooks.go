package vm

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// Hook kinds, as named in spec.template.spec.lifecycle.
const (
	hookPreStart = "preStart"
	hookPreStop  = "preStop"
)

// HookRequest is the JSON body an HTTP hook receives.
type HookRequest struct {
	Hook       string `json:"hook"`
	Namespace  string `json:"namespace"`
	Name       string `json:"name"`
	UID        string `json:"uid"`
	Generation int64  `json:"generation"`
	Node       string `json:"node,omitempty"`
}

// hookOutcome is where a hook run stands.
type hookOutcome int

const (
	hookSucceeded hookOutcome = iota
	hookRunning               // a Job still runs; come back when it changes
	hookFailed
)

// runHook runs one lifecycle hook for the VM's current generation. Hooks run
// at least once per start or stop; they must be safe to repeat.
func (r *Reconciler) runHook(ctx context.Context, vm *novacronv1.VirtualMachine, kind string, hook *novacronv1.LifecycleHook) (hookOutcome, error) {
	if hook == nil {
		return hookSucceeded, nil
	}
	if hook.HTTP != nil {
		if err := r.runHTTPHook(ctx, vm, kind, hook); err != nil {
			return hookFailed, err
		}
		return hookSucceeded, nil
	}
	return r.runJobHook(ctx, vm, kind, hook)
}

func (r *Reconciler) runHTTPHook(ctx context.Context, vm *novacronv1.VirtualMachine, kind string, hook *novacronv1.LifecycleHook) error {
	body, err := json.Marshal(HookRequest{Hook: kind, Namespace: vm.Namespace, Name: vm.Name, UID: string(vm.UID), Generation: vm.Generation, Node: vm.Status.NodeName})
	if err != nil {
		return err
	}
	method := hook.HTTP.Method
	if method == "" {
		method = http.MethodPost
	}
	timeout := time.Duration(hook.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	var lastErr error
	for try := 0; try <= int(hook.Retries); try++ {
		if try > 0 {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(time.Duration(try) * 500 * time.Millisecond):
			}
		}
		lastErr = func() error {
			tctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			req, err := http.NewRequestWithContext(tctx, method, hook.HTTP.URL, bytes.NewReader(body))
			if err != nil {
				return err
			}
			req.Header.Set("Content-Type", "application/json")
			req.Header.Set("User-Agent", "novacron-operator")
			for k, v := range hook.HTTP.Headers {
				req.Header.Set(k, v)
			}
			resp, err := r.HTTPClient.Do(req)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
			if resp.StatusCode < 200 || resp.StatusCode > 299 {
				return fmt.Errorf("%s %s answered %s: %s", method, hook.HTTP.URL, resp.Status, strings.TrimSpace(string(msg)))
			}
			return nil
		}()
		if lastErr == nil {
			return nil
		}
	}
	return fmt.Errorf("%s hook failed after %d tries: %w", kind, hook.Retries+1, lastErr)
}

// hookJobName is the Job that runs a hook for one generation of the VM: a new
// start or stop (a changed spec) gets a new Job; the same one is found again
// after an operator restart.
func hookJobName(vm *novacronv1.VirtualMachine, kind string) string {
	return fmt.Sprintf("%s-%s-%d", vm.Name, strings.ToLower(kind), vm.Generation)
}

func (r *Reconciler) runJobHook(ctx context.Context, vm *novacronv1.VirtualMachine, kind string, hook *novacronv1.LifecycleHook) (hookOutcome, error) {
	name := hookJobName(vm, kind)
	var job batchv1.Job
	err := r.Client.Get(ctx, client.ObjectKey{Namespace: vm.Namespace, Name: name}, &job)
	if apierrors.IsNotFound(err) {
		if err := r.deleteOldHookJobs(ctx, vm, kind, name); err != nil {
			return hookRunning, err
		}
		job = batchv1.Job{
			ObjectMeta: metav1.ObjectMeta{
				Name: name, Namespace: vm.Namespace,
				Labels:          map[string]string{novacronv1.LabelVM: vm.Name, novacronv1.LabelComponent: novacronv1.ComponentHook, novacronv1.LabelHook: kind},
				Annotations:     hook.Job.Template.Metadata.Annotations,
				OwnerReferences: []metav1.OwnerReference{*metav1.NewControllerRef(vm, novacronv1.GroupVersion.WithKind("VirtualMachine"))},
			},
			Spec: *hook.Job.Template.Spec.DeepCopy(),
		}
		for k, v := range hook.Job.Template.Metadata.Labels {
			if _, taken := job.Labels[k]; !taken {
				job.Labels[k] = v
			}
		}
		if job.Spec.ActiveDeadlineSeconds == nil && hook.TimeoutSeconds > 0 {
			d := int64(hook.TimeoutSeconds) * int64(hook.Retries+1)
			job.Spec.ActiveDeadlineSeconds = &d
		}
		if job.Spec.BackoffLimit == nil {
			b := hook.Retries
			job.Spec.BackoffLimit = &b
		}
		if job.Spec.Template.Spec.RestartPolicy == "" {
			job.Spec.Template.Spec.RestartPolicy = corev1.RestartPolicyNever
		}
		if err := r.Client.Create(ctx, &job); err != nil {
			if apierrors.IsInvalid(err) {
				return hookFailed, fmt.Errorf("%s hook Job template is not a valid Job: %w", kind, err)
			}
			return hookRunning, err
		}
		r.Recorder.Eventf(vm, nil, corev1.EventTypeNormal, novacronv1.ReasonHookStarted, novacronv1.ActionRun, "%s hook: started Job %s", kind, name)
		return hookRunning, nil
	}
	if err != nil {
		return hookRunning, err
	}
	for _, c := range job.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case batchv1.JobComplete, batchv1.JobSuccessCriteriaMet:
			return hookSucceeded, nil
		case batchv1.JobFailed, batchv1.JobFailureTarget:
			return hookFailed, fmt.Errorf("%s hook Job %s failed: %s: %s", kind, name, c.Reason, c.Message)
		}
	}
	return hookRunning, nil
}

// deleteOldHookJobs removes the Jobs of earlier runs of the same hook.
func (r *Reconciler) deleteOldHookJobs(ctx context.Context, vm *novacronv1.VirtualMachine, kind, keep string) error {
	var jobs batchv1.JobList
	if err := r.Client.List(ctx, &jobs, client.InNamespace(vm.Namespace), client.MatchingLabels{novacronv1.LabelVM: vm.Name, novacronv1.LabelHook: kind}); err != nil {
		return err
	}
	for i := range jobs.Items {
		if jobs.Items[i].Name == keep {
			continue
		}
		if err := r.Client.Delete(ctx, &jobs.Items[i], client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
			return err
		}
	}
	return nil
}
