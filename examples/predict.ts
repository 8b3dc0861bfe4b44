// Five lines of SDK: one breast-cancer record is encrypted in this process, evaluated encrypted
// by the server, and decrypted here. The secret key never leaves this process.
//
//   npx sealed train --train data/breast_cancer --model out/model --set target=diagnosis --set labels=malignant,benign
//   npx sealed serve --model out/model --allow-any &        # the inference server, on 127.0.0.1:8080
//   node examples/predict.ts [model dir] [server URL]
import { createClient } from '../src/client/index.ts';

const [model = 'out/model', endpoint = 'http://127.0.0.1:8080'] = process.argv.slice(2);
// The first record of data/breast_cancer/breast_cancer.csv: its 30 features, without the diagnosis.
const record = [
  17.99, 10.38, 122.8, 1001, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871, 1.095, 0.9053, 8.589, 153.4, 0.006399, 0.04904, 0.05373, 0.01587, 0.03003,
  0.006193, 25.38, 17.33, 184.6, 2019, 0.1622, 0.6656, 0.7119, 0.2654, 0.4601, 0.1189,
];

const client = await createClient({ model, endpoint });
const [p] = await client.predict([record]);
console.log(p.label, p.probabilities);
await client.close();
