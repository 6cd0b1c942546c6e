module github.com/skyisland/skyisland/clients/go

go 1.19
