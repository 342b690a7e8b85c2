package discovery

import (
	"bufio"
	"io"
	"os"
	"regexp"
	"strings"
)

// PCIIDs names PCI vendors and devices, from a pci.ids file (Debian's
// pci.ids package installs /usr/share/misc/pci.ids).
type PCIIDs struct {
	vendors map[string]string // "10de" -> "NVIDIA Corporation"
	devices map[string]string // "10de:1eb8" -> "TU104GL [Tesla T4]"
}

// PCIIDsPaths are where distributions install pci.ids.
var PCIIDsPaths = []string{"/usr/share/misc/pci.ids", "/usr/share/hwdata/pci.ids"}

// LoadPCIIDs reads the first of paths that exists; none is not an error
// (devices are then named by their IDs).
func LoadPCIIDs(paths ...string) (*PCIIDs, error) {
	for _, p := range paths {
		f, err := os.Open(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return ParsePCIIDs(f)
	}
	return &PCIIDs{}, nil
}

// ParsePCIIDs reads the pci.ids format: a vendor line "vvvv  Name", its
// devices indented by one tab "\tdddd  Name", subsystems by two (ignored),
// and device classes after a "C" line (ignored).
func ParsePCIIDs(r io.Reader) (*PCIIDs, error) {
	ids := &PCIIDs{vendors: map[string]string{}, devices: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	vendor := ""
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "" || line[0] == '#':
		case strings.HasPrefix(line, "C "):
			vendor = "" // the class section: nothing more of interest
		case strings.HasPrefix(line, "\t\t"):
		case line[0] == '\t':
			if id, name, ok := idLine(line[1:]); ok && vendor != "" {
				ids.devices[vendor+":"+id] = name
			}
		default:
			id, name, ok := idLine(line)
			vendor = ""
			if ok {
				vendor = id
				ids.vendors[id] = name
			}
		}
	}
	return ids, sc.Err()
}

func idLine(s string) (id, name string, ok bool) {
	id, name, ok = strings.Cut(s, "  ")
	if !ok || len(id) != 4 {
		return "", "", false
	}
	return strings.ToLower(id), strings.TrimSpace(name), true
}

// Vendor is the vendor's name, "" if unknown.
func (p *PCIIDs) Vendor(vendor string) string { return p.vendors[vendor] }

// Device is the device's name, "" if unknown.
func (p *PCIIDs) Device(vendor, device string) string { return p.devices[vendor+":"+device] }

// vendorSlugs are the short names NovaCron's API uses for the vendors
// whose devices VMs take (VM devices[].vendor).
var vendorSlugs = map[string]string{"10de": "nvidia", "1002": "amd", "8086": "intel", "15b3": "mellanox", "1a03": "aspeed"}

// VendorSlug is the vendor as VM specs name it: nvidia, amd, intel; else
// the first word of its pci.ids name, lowercased; else the ID.
func (p *PCIIDs) VendorSlug(vendor string) string {
	if s, ok := vendorSlugs[vendor]; ok {
		return s
	}
	if name := p.Vendor(vendor); name != "" {
		return Slug(strings.Fields(name)[0])
	}
	return vendor
}

// ModelSlug is the model as VM specs name it, from the device's pci.ids
// name: the marketing name in brackets when there is one ("TU104GL [Tesla
// T4]" gives tesla-t4), else the whole name; "" if the ID is unknown.
func (p *PCIIDs) ModelSlug(vendor, device string) string {
	name := p.Device(vendor, device)
	if open, close := strings.LastIndex(name, "["), strings.LastIndex(name, "]"); open >= 0 && close > open {
		name = name[open+1 : close]
	}
	return Slug(name)
}

var nonSlug = regexp.MustCompile(`[^a-z0-9]+`)

// Slug lowercases s and joins its words with dashes ("H100 SXM5 80GB"
// gives h100-sxm5-80gb), as DNS labels and NovaCron's model names are.
func Slug(s string) string {
	return strings.Trim(nonSlug.ReplaceAllString(strings.ToLower(s), "-"), "-")
}
