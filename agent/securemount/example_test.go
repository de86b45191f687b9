package securemount_test

import (
	"fmt"

	"github.com/coffer-dev/coffer/agent/securemount"
)

// A CDH block-device request's options, as kata-agent sends them: open
// (after formatting) /dev/vdb with the broker's key and mount ext4.
func ExampleParseBlockDevice() {
	b, err := securemount.ParseBlockDevice(map[string]string{
		"devicePath": "/dev/vdb", "sourceType": "empty", "encryptionType": "luks2",
		"targetType": "fileSystem", "filesystemType": "ext4", "key": "kbs:///default/disk/key",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(b.DevicePath, b.Empty, b.Key)
	_, err = securemount.ParseBlockDevice(map[string]string{"devicePath": "/dev/vdb", "sourceType": "encrypted", "encryptionType": "luks2", "targetType": "fileSystem"})
	fmt.Println(err)
	// Output:
	// /dev/vdb true kbs:///default/disk/key
	// block-device: sourceType "encrypted" needs a key (a random key opens nothing): bad secure mount request
}
