package webhook

import (
	"context"
	"encoding/json"
	"sort"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
	"github.com/novacron/operator/policies"
)

// BenchmarkAdmissionReview is one VirtualMachine admission review through the
// validating handler: decoding, built-in checks and every admission policy,
// with the built-in policy library in force and, as the baseline, with no
// policies. It reports p50 and p99.
//
//	go test ./operator/webhook -run '^$' -bench AdmissionReview -benchtime 20000x
func BenchmarkAdmissionReview(b *testing.B) {
	b.Run("no-policies", func(b *testing.B) { benchAdmission(b, false) })
	b.Run("builtin-library", func(b *testing.B) { benchAdmission(b, true) })
}

func benchAdmission(b *testing.B, withPolicies bool) {
	ctx := context.Background()
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(novacronv1.AddToScheme(scheme))
	engine, err := policies.NewEngine()
	require.NoError(b, err)
	builtins, err := policies.Builtins()
	require.NoError(b, err)
	for _, p := range builtins {
		if withPolicies {
			require.NoError(b, engine.Upsert(ctx, p))
		}
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "default"}}).Build()
	handler := admission.WithValidator[*novacronv1.VirtualMachine](scheme, &VMValidator{Client: c, APIReader: c, Policies: PolicyGate{Reader: c, Engine: engine}})

	vm := loadSample(b, "vm-snapshot-policy.yaml")
	vm.Labels = map[string]string{"owner": "team-a"}
	raw, err := json.Marshal(vm)
	require.NoError(b, err)
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "1", Operation: admissionv1.Create, Name: vm.Name, Namespace: "default",
		Kind:   metav1.GroupVersionKind{Group: "novacron.io", Version: "v1alpha1", Kind: "VirtualMachine"},
		Object: runtime.RawExtension{Raw: raw},
	}}
	if resp := handler.Handle(ctx, req); !resp.Allowed {
		b.Fatalf("the sample VM was denied: %v", resp.Result)
	}

	lat := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		resp := handler.Handle(ctx, req)
		lat = append(lat, time.Since(start))
		if !resp.Allowed {
			b.Fatal("denied")
		}
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
	b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
}
