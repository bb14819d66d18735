// cri-pull ADDRESS NAMESPACE REF: pulls REF (plain HTTP) into the containerd at ADDRESS and
// unpacks it with the snapshotter "stargz", labelling the layers as containerd 1.6's CRI plugin
// does (appendInfoHandlerWrapper in pkg/cri/server/image_pull.go: the
// containerd.io/snapshot/cri.* labels, passed to the snapshotter with
// disable_snapshot_annotations = false). The CRI plugin itself needs a CRI client (crictl,
// kubelet), which Debian 12 does not package; lazy_test uses this to check that
// layercache-stargz finds layers from those labels (snapshotter/cri.go). Built like the
// snapshotter (scripts/build-snapshotter.sh), from Debian's packaged containerd library.
package main

import (
	"context"
	"fmt"
	"os"
	"strings"

	"github.com/containerd/containerd"
	"github.com/containerd/containerd/images"
	"github.com/containerd/containerd/namespaces"
	"github.com/containerd/containerd/remotes/docker"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: cri-pull ADDRESS NAMESPACE REF")
		os.Exit(2)
	}
	addr, ns, ref := os.Args[1], os.Args[2], os.Args[3]
	c, err := containerd.New(addr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cri-pull:", err)
		os.Exit(1)
	}
	defer c.Close()
	ctx := namespaces.WithNamespace(context.Background(), ns)
	resolver := docker.NewResolver(docker.ResolverOptions{PlainHTTP: true})
	wrapper := func(f images.Handler) images.Handler {
		return images.HandlerFunc(func(ctx context.Context, desc ocispec.Descriptor) ([]ocispec.Descriptor, error) {
			children, err := f.Handle(ctx, desc)
			if err != nil {
				return nil, err
			}
			if desc.MediaType == ocispec.MediaTypeImageManifest || desc.MediaType == images.MediaTypeDockerSchema2Manifest {
				var layers []string
				for _, c := range children {
					if images.IsLayerType(c.MediaType) {
						layers = append(layers, c.Digest.String())
					}
				}
				for i := range children {
					c := &children[i]
					if images.IsLayerType(c.MediaType) {
						if c.Annotations == nil {
							c.Annotations = map[string]string{}
						}
						c.Annotations["containerd.io/snapshot/cri.image-ref"] = ref
						c.Annotations["containerd.io/snapshot/cri.manifest-digest"] = desc.Digest.String()
						c.Annotations["containerd.io/snapshot/cri.layer-digest"] = c.Digest.String()
						c.Annotations["containerd.io/snapshot/cri.image-layers"] = strings.Join(layers, ",")
					}
				}
			}
			return children, nil
		})
	}
	img, err := c.Pull(ctx, ref, containerd.WithResolver(resolver), containerd.WithPullUnpack,
		containerd.WithPullSnapshotter("stargz"), containerd.WithImageHandlerWrapper(wrapper))
	if err != nil {
		fmt.Fprintln(os.Stderr, "cri-pull:", err)
		os.Exit(1)
	}
	fmt.Println("pulled", img.Name())
}
