// Layer sources from the labels containerd's CRI plugin puts on snapshots (Kubernetes pulls
// with `snapshotter = "stargz"` and `disable_snapshot_annotations = false`). The library's
// source.FromDefaultLabels reads only the labels ctr-remote rpull sets; its service/ package,
// which reads both, does not build from Debian (k8s.io/cri-api). This is its
// sourceFromCRILabels (service/cri.go, stargz-snapshotter 0.12, Apache License 2.0).
package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/containerd/containerd/reference"
	"github.com/containerd/stargz-snapshotter/fs/source"
	digest "github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

const (
	criRefLabel         = "containerd.io/snapshot/cri.image-ref"    // the image reference
	criDigestLabel      = "containerd.io/snapshot/cri.layer-digest" // this layer
	criImageLayersLabel = "containerd.io/snapshot/cri.image-layers" // the image's layers
)

func sourceFromCRILabels(hosts source.RegistryHosts) source.GetSources {
	return func(labels map[string]string) ([]source.Source, error) {
		refStr, ok := labels[criRefLabel]
		if !ok {
			return nil, fmt.Errorf("no %s label", criRefLabel)
		}
		refspec, err := reference.Parse(refStr)
		if err != nil {
			return nil, err
		}
		digestStr, ok := labels[criDigestLabel]
		if !ok {
			return nil, fmt.Errorf("no %s label", criDigestLabel)
		}
		target, err := digest.Parse(digestStr)
		if err != nil {
			return nil, err
		}
		layers := []ocispec.Descriptor{{Digest: target}}
		if l, ok := labels[criImageLayersLabel]; ok {
			for _, s := range strings.Split(l, ",") {
				d, err := digest.Parse(s)
				if err != nil {
					return nil, err
				}
				if d != target {
					layers = append(layers, ocispec.Descriptor{Digest: d})
				}
			}
		}
		return []source.Source{{
			Hosts:    hosts,
			Name:     refspec,
			Target:   ocispec.Descriptor{Digest: target},
			Manifest: ocispec.Manifest{Layers: layers},
		}}, nil
	}
}

// firstSource asks each GetSources in turn and returns the first answer.
func firstSource(ps ...source.GetSources) source.GetSources {
	return func(labels map[string]string) ([]source.Source, error) {
		var errs []string
		for _, p := range ps {
			src, err := p(labels)
			if err == nil {
				return src, nil
			}
			errs = append(errs, err.Error())
		}
		return nil, errors.New(strings.Join(errs, "; "))
	}
}
