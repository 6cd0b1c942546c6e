module skyisland.local/gen

go 1.18
