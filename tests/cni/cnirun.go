// cnirun drives CNI plugins through the real libcni (Debian's
// golang-github-appc-cni-dev), as a container runtime does:
//
//	cnirun add|check|del CONFLIST NETNS CONTAINER_ID IFNAME
//
// Plugins are looked up in $CNI_PATH; results are cached in $CNI_CACHE_DIR
// (libcni's cache is what CHECK and DEL read prevResult from). ADD prints
// the result; errors are printed as the plugin's CNI error and exit 1.
// $CNIRUN_CAPS, if set, is the JSON of the capability arguments (portMappings).
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"github.com/containernetworking/cni/libcni"
)

func fail(err error) {
	fmt.Fprintln(os.Stderr, err)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 6 {
		fmt.Fprintln(os.Stderr, "usage: cnirun add|check|del CONFLIST NETNS CONTAINER_ID IFNAME")
		os.Exit(2)
	}
	list, err := libcni.ConfListFromFile(os.Args[2])
	if err != nil {
		fail(err)
	}
	paths := filepath.SplitList(os.Getenv("CNI_PATH"))
	cni := libcni.NewCNIConfigWithCacheDir(paths, os.Getenv("CNI_CACHE_DIR"), nil)
	rt := &libcni.RuntimeConf{NetNS: os.Args[3], ContainerID: os.Args[4], IfName: os.Args[5]}
	// $CNIRUN_CAPS: capability arguments as a runtime passes them ({"portMappings": [...]}).
	if caps := os.Getenv("CNIRUN_CAPS"); caps != "" {
		if err := json.Unmarshal([]byte(caps), &rt.CapabilityArgs); err != nil {
			fail(err)
		}
	}
	ctx := context.Background()
	switch os.Args[1] {
	case "add":
		res, err := cni.AddNetworkList(ctx, list, rt)
		if err != nil {
			fail(err)
		}
		out, _ := json.Marshal(res)
		fmt.Println(string(out))
	case "check":
		err = cni.CheckNetworkList(ctx, list, rt)
	case "del":
		err = cni.DelNetworkList(ctx, list, rt)
	default:
		fmt.Fprintln(os.Stderr, "unknown command", os.Args[1])
		os.Exit(2)
	}
	if err != nil {
		fail(err)
	}
}
