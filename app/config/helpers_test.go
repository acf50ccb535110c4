package config_test

import (
	"fmt"
	"strconv"
)

func itoa(n int) string { return strconv.Itoa(n) }

func boolString(b bool) string { return strconv.FormatBool(b) }

func fmtValue(v any) string { return fmt.Sprint(v) }
