package domain

// A VM's cloud-init NoCloud data source: user-data, meta-data and
// network-config on an ISO 9660 disk labelled "cidata", which the guest's
// cloud-init finds on its CD-ROM drive.

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/kdomanski/iso9660"
	"sigs.k8s.io/yaml"

	novacronv1 "github.com/novacron/operator/api/v1alpha1"
)

// CloudInitLabel is the label cloud-init's NoCloud source looks for.
const CloudInitLabel = "cidata"

// CloudInit is the content of a NoCloud data source.
type CloudInit struct {
	UserData      string
	MetaData      string
	NetworkConfig string
}

// CloudInitNIC is one NIC the network configuration describes.
type CloudInitNIC struct {
	Network novacronv1.Network
	MAC     string
}

// NewCloudInit builds the data source for a VM. userData is the VM's
// user-data, already read from the spec or its Secret.
func NewCloudInit(instanceID, hostname, userData string, nics []CloudInitNIC) (CloudInit, error) {
	meta, err := yaml.Marshal(map[string]string{"instance-id": instanceID, "local-hostname": hostname})
	if err != nil {
		return CloudInit{}, err
	}
	netcfg, err := networkConfig(nics)
	if err != nil {
		return CloudInit{}, err
	}
	if userData == "" {
		// An empty user-data file makes some cloud-init versions complain.
		userData = "#cloud-config\n{}\n"
	}
	return CloudInit{UserData: userData, MetaData: string(meta), NetworkConfig: netcfg}, nil
}

// networkConfig writes cloud-init network configuration version 2: each NIC
// matched by its MAC, with DHCP or its static address and default route.
func networkConfig(nics []CloudInitNIC) (string, error) {
	type route struct {
		To  string `json:"to"`
		Via string `json:"via"`
	}
	type ethernet struct {
		Match     map[string]string `json:"match"`
		DHCP4     bool              `json:"dhcp4"`
		Addresses []string          `json:"addresses,omitempty"`
		Routes    []route           `json:"routes,omitempty"`
	}
	eth := map[string]ethernet{}
	for _, n := range nics {
		e := ethernet{Match: map[string]string{"macaddress": n.MAC}, DHCP4: true}
		if ip := n.Network.IPv4; ip != nil && ip.Method == novacronv1.IPv4Static {
			if ip.Address == "" {
				return "", fmt.Errorf("network %q: static IPv4 needs an address", n.Network.Name)
			}
			e.DHCP4 = false
			e.Addresses = []string{ip.Address}
			if ip.Gateway != "" {
				e.Routes = []route{{To: "default", Via: ip.Gateway}}
			}
		}
		eth[n.Network.Name] = e
	}
	out, err := yaml.Marshal(map[string]any{"version": 2, "ethernets": eth})
	return string(out), err
}

// ISO writes the data source as an ISO 9660 image.
func (d CloudInit) ISO() ([]byte, error) {
	w, err := iso9660.NewWriter()
	if err != nil {
		return nil, err
	}
	defer w.Cleanup()
	for name, content := range map[string]string{"user-data": d.UserData, "meta-data": d.MetaData, "network-config": d.NetworkConfig} {
		if err := w.AddFile(strings.NewReader(content), name); err != nil {
			return nil, fmt.Errorf("cloud-init %s: %w", name, err)
		}
	}
	var buf bytes.Buffer
	if err := w.WriteTo(&buf, CloudInitLabel); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
