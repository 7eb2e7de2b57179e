// Validates AsyncAPI documents with the AsyncAPI project's parser: node validate.mjs FILE...
// Prints each diagnostic as JSON on a line of its own; exits 1 if any is an error (severity 0).
import { readFileSync } from "node:fs";
import { Parser } from "@asyncapi/parser";

const parser = new Parser();
let failed = false;
for (const file of process.argv.slice(2)) {
    const { document, diagnostics } = await parser.parse(readFileSync(file, "utf8"), { source: file });
    for (const { code, message, path, severity } of diagnostics) {
        console.log(JSON.stringify({ file, code, message, path, severity }));
    }
    if (document === undefined || diagnostics.some((d) => d.severity === 0)) {
        failed = true;
    }
}
process.exit(failed ? 1 : 0);
