// Package simnode makes simulated hypervisor nodes for tests: each node is a
// libvirt test-driver host (test:///path/to/node.xml) with its own CPUs,
// memory and a "default" storage pool holding the image catalog's volumes.
//
// Each open of a file-based test URI is a separate in-memory host, so every
// simulated node gets its own file; test:///default is shared by all
// connections in a process and cannot stand for two nodes.
package simnode

import (
	"fmt"
	"html"
	"os"
	"path/filepath"
	"strings"
)

// Node describes a simulated hypervisor.
type Node struct {
	Name        string
	CPUs        int
	MemoryBytes int64
	// Images are volume names present in the default pool, such as
	// "ubuntu-22.04-lts.qcow2".
	Images []string
}

// Write writes the node's test-driver file into dir and returns its URI.
func Write(dir string, n Node) (string, error) {
	if n.CPUs == 0 {
		n.CPUs = 16
	}
	if n.MemoryBytes == 0 {
		n.MemoryBytes = 64 << 30
	}
	var vols strings.Builder
	for _, img := range n.Images {
		fmt.Fprintf(&vols, `
    <volume>
      <name>%s</name>
      <capacity unit='GiB'>2</capacity>
      <target><format type='qcow2'/></target>
    </volume>`, html.EscapeString(img))
	}
	doc := fmt.Sprintf(`<node>
  <cpu>
    <mhz>2400</mhz>
    <model>x86_64</model>
    <active>%d</active>
    <nodes>1</nodes>
    <sockets>1</sockets>
    <cores>%d</cores>
    <threads>1</threads>
  </cpu>
  <memory>%d</memory>
  <pool type='dir'>
    <name>default</name>
    <capacity unit='GiB'>1000</capacity>
    <available unit='GiB'>1000</available>
    <target><path>/var/lib/novacron/%s/images</path></target>%s
  </pool>
</node>
`, n.CPUs, n.CPUs, n.MemoryBytes/1024, html.EscapeString(n.Name), vols.String())
	path, err := filepath.Abs(filepath.Join(dir, n.Name+".xml"))
	if err != nil {
		return "", err
	}
	if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
		return "", err
	}
	return "test://" + path, nil
}
