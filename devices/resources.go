// Package devices is NovaCron's model of the host devices VMs get: the
// resource names a launcher pod requests them under, the rule that maps an
// sr-iov network to its VF pool, and the choice of concrete devices on a node
// (best fit, optional NUMA alignment). It is pure: the scheduler, the
// operator, admission and `novacron dev` all decide by it, so they agree.
// Device discovery for novacron-node joins it later.
package devices

import (
	corev1 "k8s.io/api/core/v1"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// GPUResourcePrefix names the extended resource a GPU model is counted
// under: devices.novacron.io/<vendor>-<model>.
const GPUResourcePrefix = "devices.novacron.io/"

// GPUResourceName is the extended resource a GPU request is counted under
// (a node publishes its GPUs under the same name).
func GPUResourceName(d novacronv1.Device) corev1.ResourceName {
	if d.Model == "" {
		return corev1.ResourceName(GPUResourcePrefix + d.Vendor + "-gpu")
	}
	return corev1.ResourceName(GPUResourcePrefix + d.Vendor + "-" + d.Model)
}
