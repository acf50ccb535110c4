package config_test

import (
	"fmt"
	"strconv"

	"github.com/bulkheadhq/bulkhead/app"
	"github.com/bulkheadhq/bulkhead/app/config"
	"github.com/bulkheadhq/bulkhead/isolation/database"
)

func itoa(n int) string { return strconv.Itoa(n) }

func boolString(b bool) string { return strconv.FormatBool(b) }

func fmtValue(v any) string { return fmt.Sprint(v) }

// load is config.Load with the build's strategies, as the commands load.
func load(in config.Input) (*config.Loaded, error) {
	in.Strategies = app.Strategies
	return config.Load(in)
}

// databaseConfig is the database strategy's configuration of c.
func databaseConfig(c *config.Config) *database.Config {
	return c.Isolation.Settings[database.Descriptor.Name].(*database.Config)
}
