module skyisland.test/attack

go 1.19

require skyisland.test/hostile v0.0.0

replace skyisland.test/hostile => ../fixtures/hostile
