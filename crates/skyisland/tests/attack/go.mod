module skyisland.test/attack

go 1.19
